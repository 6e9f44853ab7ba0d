#!/usr/bin/env bash
# Azure Batch on this machine: `start` runs Azurite (the real Blob emulator) on 127.0.0.1:10000
# (pidfile .state/azurite.pid) with the containers the Terraform module would create and the
# example dataset, and the STAND-IN Azure Batch server (brizo's test server; no Batch emulator
# exists) on 127.0.0.1:8640 (pidfile .state/batch-standin.pid) with the module's Batch job, and
# installs the runner where pool nodes have it; `env` prints the variables brizo reads (Blob in
# emulator mode; Batch through the Microsoft Entra managed identity endpoint the stand-in serves
# as App Service does, which azure_identity's ManagedIdentityCredential asks); `try`
# does everything end to end with config/examples/azure-local.toml and stops what it started;
# `stop` stops both.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
BLOB_PORT=10000
BATCH_PORT=8640
AZURITE_PID="$STATE_DIR/azurite.pid"
STANDIN_PID="$STATE_DIR/batch-standin.pid"
RUNNER_HOST_PATH=/opt/brizo/brizo-runner
# The stand-in's managed identity header (brizo_test_rigs::entra::IDENTITY_HEADER) and its
# account key (brizo_test_rigs::azure_batch::KEY, for auth = "shared_key"): not secrets.
STANDIN_IDENTITY_HEADER=brizo-standin-identity-header-not-a-secret
STANDIN_KEY=YnJpem8tc3RhbmQtaW4tYmF0Y2gta2V5LW5vdC1hLXNlY3JldA==

env_lines() {
  cat <<EOV
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$BLOB_PORT
export IDENTITY_ENDPOINT=http://127.0.0.1:$BATCH_PORT/msi/token IDENTITY_HEADER=$STANDIN_IDENTITY_HEADER
export AZURE_BATCH_ACCESS_KEY=$STANDIN_KEY
EOV
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 150); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done
  die "nothing listens on 127.0.0.1:$1; see $2"
}

start() {
  bash scripts/setup.sh
  bash scripts/test-deps.sh
  if running "$AZURITE_PID"; then
    say "Azurite already runs on 127.0.0.1:$BLOB_PORT (pid $(cat "$AZURITE_PID"))"
  else
    say "starting Azurite (the Azure Blob emulator) on 127.0.0.1:$BLOB_PORT"
    mkdir -p "$STATE_DIR/azurite"
    nohup "$STATE_DIR/tools/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$BLOB_PORT" \
      --location "$STATE_DIR/azurite" --disableTelemetry --skipApiVersionCheck >"$STATE_DIR/azurite.log" 2>&1 &
    echo $! >"$AZURITE_PID"
    wait_port "$BLOB_PORT" "$STATE_DIR/azurite.log"
  fi
  say "installing the runner at $RUNNER_HOST_PATH (the pool's start task does this on real nodes)"
  runner=$(bash scripts/runner.sh)
  install -D -m 0755 "$runner" "$RUNNER_HOST_PATH"
  if running "$STANDIN_PID"; then
    say "the stand-in Batch server already runs on 127.0.0.1:$BATCH_PORT (pid $(cat "$STANDIN_PID"))"
  else
    say "building the stand-in Azure Batch server (test code: it is not Azure)"
    cargo build --locked --quiet -p brizo-test-rigs --features azure --bin azure-batch-standin
    say "starting it on 127.0.0.1:$BATCH_PORT with the Batch job brizo-jobs; creating the containers and uploading the example dataset to az://devstoreaccount1/datasets/weather/daily.csv"
    nohup "$ROOT/target/debug/azure-batch-standin" --port "$BATCH_PORT" --job brizo-jobs \
      --azurite "$BLOB_PORT" --container datasets --container staging --container results \
      --upload datasets/weather/daily.csv=examples/datasets/weather/daily.csv >"$STATE_DIR/batch-standin.log" 2>&1 &
    echo $! >"$STANDIN_PID"
    wait_port "$BATCH_PORT" "$STATE_DIR/batch-standin.log"
  fi
}

stop() {
  for pidfile in "$STANDIN_PID" "$AZURITE_PID"; do
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  say "the stand-in Batch server and Azurite stopped"
}

try() {
  start
  trap 'kill $SERVICE 2>/dev/null; wait $SERVICE 2>/dev/null; stop; bash scripts/dockerd.sh stop' EXIT
  eval "$(env_lines)"
  export BRIZO_ADMIN_TOKEN=try-azure-operator-token
  build_shared
  try_summary azure-local "az://devstoreaccount1/datasets/weather/daily.csv" "az://devstoreaccount1/datasets/weather/daily.csv: routed to (stand-in) Azure Batch" "in Azurite under results/brizo/<job id>/"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  try) try ;;
  *) die "usage: $0 start|env|try|stop" ;;
esac
