#!/usr/bin/env bash
# Installs and starts what brizo needs on this machine, idempotently:
# the Docker engine (Debian's docker.io), and the python base image built with debootstrap.
source "$(dirname "$0")/lib.sh"
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup, rustc >= 1.95) first"
# e2fsprogs and mount: each job's size-limited disk (limits.disk).
apt_install ca-certificates e2fsprogs mount
bash "$ROOT/scripts/dockerd.sh" start
bash "$ROOT/scripts/base-image.sh"
