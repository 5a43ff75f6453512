#!/usr/bin/env bash
# Install what lakestream's tests and demo need on a fresh Debian/Ubuntu machine that has
# the Rust toolchain and Python: the tansu broker (crates.io), MariaDB (apt), the Python
# `deltalake` reader and `moto_server` (PyPI), Chromium (apt) and a C toolchain for
# librdkafka. Skips what is already there.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v make >/dev/null || ! command -v g++ >/dev/null; then
  log "installing a C/C++ toolchain (librdkafka is built from source)"
  apt_install build-essential
fi

if ! command -v tansu >/dev/null; then
  log "installing the tansu Kafka-compatible broker from crates.io (about 10 minutes)"
  # Its own throw-away target dir, not the project's (CARGO_TARGET_DIR may be exported).
  env -u CARGO_TARGET_DIR cargo install tansu --locked --features dynostore,libsql
fi

if [ ! -x /usr/sbin/mariadbd ] && ! command -v mariadbd >/dev/null; then
  log "installing MariaDB"
  apt_install mariadb-server
fi

if ! command -v chromium >/dev/null; then
  log "installing Chromium (the status page is tested in headless Chromium)"
  apt_install chromium
fi

if ! python3 -c 'import deltalake, pyarrow' 2>/dev/null; then
  log "installing the Python deltalake reader (independent check of our tables)"
  python3 -m pip install --quiet --disable-pip-version-check deltalake pyarrow
fi
if ! command -v moto_server >/dev/null; then
  log "installing moto_server (a local S3-compatible server for the object-storage tests)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1'
fi
log "all dependencies present"
