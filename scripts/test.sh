#!/usr/bin/env bash
# `make test`: installs what is missing, starts the engine, runs every test against it, and
# stops what it started.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
trap 'bash "$ROOT/scripts/dockerd.sh" stop' EXIT
cd "$ROOT"
say "running the test suite (real Docker engine)"
cargo test --workspace --locked -- --test-threads="${BRIZO_TEST_THREADS:-4}"
