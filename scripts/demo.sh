#!/usr/bin/env bash
# `make demo`: installs what is missing, builds, starts brizo on the embedded defaults (local
# Docker engine, SQLite, local results folder), runs the example algorithm on the bundled
# weather dataset, and says where everything is.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PORT="${DEMO_PORT:-8030}"
DEMO_DIR="$STATE_DIR/demo"
IMAGE="brizo/python:3.11-bookworm"

say "1/6 prerequisites: Docker engine and the python base image"
bash scripts/setup.sh

say "2/6 building brizo (cargo build; the first build takes a few minutes)"
cargo build --locked --bin brizo
BRIZO="$ROOT/target/debug/brizo"

say "3/6 the publisher's data: the bundled weather dataset goes under the dataset root"
mkdir -p "$DEMO_DIR/datasets"
cp -r examples/datasets/weather "$DEMO_DIR/datasets/"
chmod -R a+rX "$DEMO_DIR/datasets"
echo "    $DEMO_DIR/datasets/weather/daily.csv ($(wc -l <examples/datasets/weather/daily.csv) lines)"

say "4/6 starting brizo serve on 127.0.0.1:$PORT (log: $DEMO_DIR/brizo.log)"
export BRIZO_ADMIN_TOKEN="${BRIZO_ADMIN_TOKEN:-demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export BRIZO_SERVER="http://127.0.0.1:$PORT"
"$BRIZO" serve --bind "127.0.0.1:$PORT" --data-dir "$DEMO_DIR" >"$DEMO_DIR/brizo.log" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  bash "$ROOT/scripts/dockerd.sh" stop
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "$BRIZO_SERVER/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$DEMO_DIR/brizo.log" >&2; die "brizo serve exited; see $DEMO_DIR/brizo.log"; }
  sleep 0.1
done
echo "    health: $(curl -fsS "$BRIZO_SERVER/health")"

say "5/6 running examples/algorithms/weather_summary.py on the dataset, in $IMAGE"
echo "    (no network, uid 65534, read-only root filesystem, all capabilities dropped, memory/CPU/pids limits)"
"$BRIZO" job run --image "$IMAGE" --entrypoint 'python3 $ALGO' \
  --algorithm examples/algorithms/weather_summary.py \
  --input "weather=file://$DEMO_DIR/datasets/weather/daily.csv" \
  --timeout 120 --download "$DEMO_DIR/downloads" | tee "$DEMO_DIR/last-run.txt"
JOB_ID=$(sed -n 's/^job \([0-9a-f]\{32\}\):.*/\1/p' "$DEMO_DIR/last-run.txt" | head -1)

say "6/6 results"
echo "    job record:     curl -H \"Authorization: Bearer \$BRIZO_ADMIN_TOKEN\" $BRIZO_SERVER/api/v2/jobs/$JOB_ID"
echo "    results store:  $DEMO_DIR/results/$JOB_ID/ (outputs/ and logs/algorithm.log)"
echo "    downloaded:     $DEMO_DIR/downloads/summary.json"
echo "    the summary:"
sed 's/^/      /' "$DEMO_DIR/downloads/summary.json" | head -30
echo "    receipts (proof of computation) and on-chain settlement are not built yet: see the open issues."
