#!/usr/bin/env bash
# `make test`: installs what is missing, starts the engine, runs every test against it, and
# stops what it started.
source "$(dirname "$0")/lib.sh"
timed "setup (engine, base image)" bash "$ROOT/scripts/setup.sh"
timed "test dependencies (emulators, chain, Slurm)" bash "$ROOT/scripts/test-deps.sh"
trap 'bash "$ROOT/scripts/slurm.sh" stop-munge; bash "$ROOT/scripts/dockerd.sh" stop' EXIT
cd "$ROOT"
# A clean checkout's one build gains nothing from incremental artefacts, which would take some
# 18 GB of disk beside the build itself.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# One feature set for lints and tests (scripts/lib.sh): every backend, and the crash tests'
# fault injection (tests/faults.rs); the try-* targets reuse the same build.
FEATURES="$TEST_FEATURES"
say "checking the Terraform modules (fmt, checkov)"
timed "Terraform checks" bash "$ROOT/scripts/terraform-check.sh"
# Style and lints first: they fail fast, before the long suite.
timed "cargo fmt --check" cargo fmt --all --check
timed "cargo clippy (all targets, all backends, warnings are errors)" \
  cargo clippy --workspace --all-targets --locked --features "$FEATURES" --quiet -- -D warnings
# Each library crate builds with only the features it asks for: inside the workspace, features
# are unified, so a crate that forgets one of its dependencies' features compiles there and
# nowhere else (brizo-backend-remote once did).
each_crate_alone() {
  local crate features
  for crate in brizo-backend-core brizo-backend-core:conformance brizo-backend-remote \
    brizo-backend-docker brizo-runner brizo-runner:bin \
    brizo-backend-aws brizo-backend-slurm brizo-backend-azure brizo-backend-gcp \
    brizo-test-rigs brizo-test-rigs:azure brizo-test-rigs:gcp; do
    features=""
    case $crate in *:*) features=${crate#*:}; crate=${crate%%:*} ;; esac
    cargo check --locked --quiet -p "$crate" ${features:+--features "$features"} ||
      die "$crate${features:+ (feature $features)} does not build on its own"
  done
}
timed "each library crate on its own (cargo check -p)" each_crate_alone
# A default build compiles no crate twice at one version: workspace-hack/ gives the compiler's
# host and the service the same features; a new or upgraded dependency that splits them again
# fails here, with the command that rewrites workspace-hack/Cargo.toml.
timed "no crate of a default build compiled twice (scripts/unify-host.py check)" \
  python3 "$ROOT/scripts/unify-host.py" check
# The static runner remote jobs start (moto, Slurm and the Batch stand-ins run them on the local engine).
timed "the static runner" bash "$ROOT/scripts/runner.sh" >/dev/null
say "running the test suite (real Docker engine, moto's AWS Batch, a one-node Slurm cluster, Azurite with a stand-in Azure Batch, fake-gcs-server with a stand-in Google Batch)"
set +e
suite_start=$SECONDS
# One build for everything: the backends are workspace members anyway, so the service's
# `aws`, `slurm` and `azure` features cost only the service's own crate. Each test that needs a Slurm
# cluster starts its own through scripts/slurm.sh (own ports and folder) and stops it.
cargo test --workspace --locked --features "$FEATURES" -- --test-threads="${BRIZO_TEST_THREADS:-4}" 2>&1 | tee "$STATE_DIR/test.log"
status=${PIPESTATUS[0]}
set -e
say "the test suite (build and run) took $((SECONDS - suite_start)) s"
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$STATE_DIR/test.log"
exit "$status"
