#!/usr/bin/env bash
# Google Batch on this machine: `start` runs fake-gcs-server (real GCS emulator) behind the
# checking proxy on 127.0.0.1:4443 and the STAND-IN Google Batch server (test code: no Batch
# emulator exists) on 127.0.0.1:8089 (pidfile .state/gcp-standin.pid), with the buckets the
# Terraform module would create and the example dataset, and installs the runner where job VMs
# have it; `env` prints the variables the Google clients read (the test service account);
# `try` does everything end to end with config/examples/gcp-local.toml and stops what it
# started; `stop` stops the emulator and the stand-in.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
GCS_PORT=4443
BATCH_PORT=8089
PIDFILE="$STATE_DIR/gcp-standin.pid"
RUNNER_HOST_PATH=/opt/brizo/brizo-runner
KEY="$ROOT/backends/rigs/fixtures/gcp/test-service-account.json"

env_lines() {
  cat <<EOV
export GOOGLE_SERVICE_ACCOUNT=$KEY GOOGLE_BASE_URL=http://127.0.0.1:$GCS_PORT
EOV
}

start() {
  bash scripts/setup.sh
  bash scripts/test-deps.sh
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "the GCS emulator and the Batch stand-in already run (pid $(cat "$PIDFILE"))"
  else
    say "building the stand-in (brizo-test-rigs, feature gcp)"
    cargo build --locked -q -p brizo-test-rigs --features gcp --bin gcp-standin
    say "starting fake-gcs-server behind its proxy on :$GCS_PORT and the Google Batch STAND-IN on :$BATCH_PORT"
    nohup "$ROOT/target/debug/gcp-standin" "$ROOT" "$GCS_PORT" "$BATCH_PORT" brizo-staging brizo-data brizo-results \
      "gs://brizo-data/weather/daily.csv=examples/datasets/weather/daily.csv" >"$STATE_DIR/gcp-standin.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$BATCH_PORT") 2>/dev/null && break; sleep 0.1; done
    (echo >"/dev/tcp/127.0.0.1/$BATCH_PORT") 2>/dev/null || { cat "$STATE_DIR/gcp-standin.log" >&2; die "the stand-in did not start"; }
  fi
  say "installing the runner at $RUNNER_HOST_PATH (the instance template's startup script does this on real VMs)"
  runner=$(bash scripts/runner.sh)
  install -D -m 0755 "$runner" "$RUNNER_HOST_PATH"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "the GCS emulator and the Batch stand-in stopped"
  fi
}

try() {
  start
  trap 'kill $SERVICE 2>/dev/null; wait $SERVICE 2>/dev/null; stop; bash scripts/dockerd.sh stop' EXIT
  eval "$(env_lines)"
  export BRIZO_ADMIN_TOKEN=try-gcp-operator-token
  build_shared
  try_summary gcp-local "gs://brizo-data/weather/daily.csv" "gs://brizo-data/weather/daily.csv: routed to Google Batch (stand-in)" "in GCS under gs://brizo-results/brizo/<job id>/"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  try) try ;;
  *) die "usage: $0 start|env|try|stop" ;;
esac
