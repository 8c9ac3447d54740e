#!/usr/bin/env bash
# Sets the machine up and runs the main job: conformance and benchmark on every backend
# (Cloud Run on the embedded emulator when no GCP project is configured), writing reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin sandbox-harness
# Built once per machine (cached afterwards); the run's browser rows and cases use it.
target/release/sandbox-harness image browser
exec target/release/sandbox-harness run "$@"
