#!/usr/bin/env bash
# `make test`: installs what is missing, starts the engine, runs every test against it, and
# stops what it started.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/test-deps.sh"
trap 'bash "$ROOT/scripts/dockerd.sh" stop' EXIT
cd "$ROOT"
say "checking the Terraform modules (fmt, checkov)"
bash "$ROOT/scripts/terraform-check.sh"
say "running the test suite (real Docker engine)"
set +e
cargo test --workspace --locked -- --test-threads="${BRIZO_TEST_THREADS:-4}" 2>&1 | tee "$STATE_DIR/test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$STATE_DIR/test.log"
exit "$status"
