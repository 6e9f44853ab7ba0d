#!/usr/bin/env bash
# Builds the python base image that example algorithms and tests run in, from Debian packages
# (no registry can be reached, so nothing is pulled). Idempotent: does nothing when the image exists.
# Usage: scripts/base-image.sh [NAME:TAG]   (default brizo/python:3.11-bookworm)
source "$(dirname "$0")/lib.sh"
IMAGE="${1:-${BRIZO_BASE_IMAGE:-brizo/python:3.11-bookworm}}"
DOCKER=/usr/bin/docker
"$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
apt_install debootstrap
ROOTFS="$(mktemp -d /tmp/brizo-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
say "building base image $IMAGE with debootstrap (about a minute; log: $STATE_DIR/debootstrap.log)"
debootstrap --variant=minbase --include=python3 bookworm "$ROOTFS" http://deb.debian.org/debian \
  >"$STATE_DIR/debootstrap.log" 2>&1 || { tail -20 "$STATE_DIR/debootstrap.log" >&2; die "debootstrap failed; see $STATE_DIR/debootstrap.log"; }
# Trim what a job never needs: apt caches and docs make the image larger for nothing.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/usr/share/doc "$ROOTFS"/usr/share/man
tar -C "$ROOTFS" -c . | "$DOCKER" import -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
say "base image $IMAGE ready"
