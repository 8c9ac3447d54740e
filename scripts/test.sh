#!/usr/bin/env bash
# Sets the machine up and runs every test (unit, property and integration against the real
# Docker engine and the embedded emulator).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --all-targets
# The browser image (Debian with Chromium) is built once per machine, before the tests, so its
# first build (a minute or two) is not inside any test's deadline; then it is cached.
target/debug/sandbox-harness image browser
cargo nextest run --workspace --no-fail-fast "$@"
