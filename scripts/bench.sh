#!/usr/bin/env bash
# `make bench`: end-to-end time of a trivial job through the API against the bare Docker
# create/start/wait/remove of the same image, in one run; prints the ratio and the phases.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
trap 'bash "$ROOT/scripts/dockerd.sh" stop' EXIT
cd "$ROOT"
say "benchmark (release build; the first one compiles for a few minutes)"
cargo bench --locked --bench e2e
