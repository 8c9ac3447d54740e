#!/usr/bin/env bash
# Sets the machine up and runs every test (unit, property and integration against the real
# Docker engine and the embedded emulator).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
