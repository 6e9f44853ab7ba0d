#!/usr/bin/env bash
# `make demo`: the whole story on one machine. Installs what is missing, builds, starts a local
# chain with the real Ocean keeper contracts and brizo on the embedded defaults (local Docker
# engine, SQLite, local results folder); a publisher publishes a dataset and an algorithm, a
# data scientist orders compute (agreement + locked price), runs the algorithm through the
# Squid-compatible API with signed requests, follows it and gets the results; the publisher is
# paid on chain; the signed receipt (proof of computation) is verified against the outputs, the
# log and its anchor on chain, and an audit rerun reproduces it. Each step is printed, and where
# everything is.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PORT="${DEMO_PORT:-8030}"
CHAIN_PORT="${DEMO_CHAIN_PORT:-8545}"
DEMO_DIR="$STATE_DIR/demo"
IMAGE="brizo/python:3.11-bookworm"
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"

say "1/9 prerequisites: Docker engine, python base image, anvil and the keeper contracts 0.13.2"
bash scripts/setup.sh
bash scripts/chain-deps.sh

if [ -x target/debug/brizo ]; then
  say "2/9 building brizo (cargo build, default features: quick after an earlier build)"
else
  # A cold build of the default features took 126 s on the 2-core development machine
  # (README, "The first build"): about 250 core-seconds, and some 15% more since TLS runs on
  # aws-lc-rs (its C build), so about 290, spread over this machine's cores (a few more on
  # many cores: the last crates build one at a time).
  CORES=$(nproc)
  say "2/9 building brizo (cargo build, default features): a first build, about $((290 / CORES)) s on these $CORES cores"
fi
BUILD_START=$SECONDS
cargo build --locked --bin brizo
echo "    built in $((SECONDS - BUILD_START)) s"
BRIZO="$ROOT/target/debug/brizo"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  bash "$ROOT/scripts/dockerd.sh" stop
}
trap cleanup EXIT

say "3/9 local chain: anvil on 127.0.0.1:$CHAIN_PORT, keeper contracts deployed from their npm artifacts"
"$BRIZO" chain dev --port "$CHAIN_PORT" --artifacts-dir "$DEMO_DIR/artifacts" --summary "$DEMO_DIR/chain.json" >"$DEMO_DIR/chain.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do [ -f "$DEMO_DIR/chain.json" ] && break; kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$DEMO_DIR/chain.log" >&2; die "brizo chain dev failed"; }; sleep 0.1; done
[ -f "$DEMO_DIR/chain.json" ] || die "the chain did not come up; see $DEMO_DIR/chain.log"
key() { python3 -c "import json,sys; print(json.load(open('$DEMO_DIR/chain.json'))['accounts'][$1]['$2'])"; }
PUBLISHER_ADDRESS=$(key 2 address); CONSUMER_ADDRESS=$(key 3 address)
sed -n '/^  [A-Z]/p' "$DEMO_DIR/chain.log" | head -9
echo "    publisher (and provider): $PUBLISHER_ADDRESS"
echo "    data scientist:           $CONSUMER_ADDRESS"

say "4/9 brizo serve on 127.0.0.1:$PORT, connected to the chain as the provider (log: $DEMO_DIR/brizo.log)"
mkdir -p "$DEMO_DIR/data/datasets"
cp -r examples/datasets/weather "$DEMO_DIR/data/datasets/"
mkdir -p "$DEMO_DIR/data/datasets/algorithms" && cp examples/algorithms/weather_summary.py "$DEMO_DIR/data/datasets/algorithms/"
chmod -R a+rX "$DEMO_DIR/data"
export BRIZO_ADMIN_TOKEN="${BRIZO_ADMIN_TOKEN:-demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export BRIZO_SERVER="http://127.0.0.1:$PORT" BRIZO_KEEPER_URL="http://127.0.0.1:$CHAIN_PORT" BRIZO_ARTIFACTS_DIR="$DEMO_DIR/artifacts"
BRIZO_PROVIDER_KEY=$(key 2 private_key) "$BRIZO" serve --bind "127.0.0.1:$PORT" --data-dir "$DEMO_DIR/data" \
  --keeper-url "$BRIZO_KEEPER_URL" --artifacts-dir "$BRIZO_ARTIFACTS_DIR" >"$DEMO_DIR/brizo.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$BRIZO_SERVER/health" >/dev/null 2>&1 && break
  kill -0 "${PIDS[1]}" 2>/dev/null || { tail -20 "$DEMO_DIR/brizo.log" >&2; die "brizo serve exited; see $DEMO_DIR/brizo.log"; }
  sleep 0.1
done
echo "    $(curl -fsS "$BRIZO_SERVER/api/v1/brizo" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("provider", d["provider-address"], "on", d["keeper-url"])')"

say "5/9 the publisher publishes the algorithm, then the weather dataset (file location encrypted to the provider)"
export BRIZO_PUBLISHER_KEY=$(key 2 private_key)
ALGORITHM=$("$BRIZO" asset publish algorithm --name "weather summary" \
  --file "file://$DEMO_DIR/data/datasets/algorithms/weather_summary.py" --container "$IMAGE")
echo "    algorithm: $ALGORITHM"
DATASET=$("$BRIZO" asset publish dataset --name "daily weather 2025" \
  --file "file://$DEMO_DIR/data/datasets/weather/daily.csv" --price 10 --timeout 600 \
  --container "$IMAGE" --trusted "$ALGORITHM")
echo "    dataset:   $DATASET (price 10 OCEAN, only the algorithm above may run, in $IMAGE)"
echo "    its public DDO holds no file location: $BRIZO_SERVER/api/v1/aquarius/assets/ddo/$DATASET"
unset BRIZO_PUBLISHER_KEY

say "6/9 the data scientist orders compute, runs the algorithm (signed v1 requests) and gets the results"
echo "    (the container: no network, uid 65534, read-only root filesystem, no capabilities, memory/CPU/pids limits)"
BRIZO_CONSUMER_KEY=$(key 3 private_key) "$BRIZO" consumer compute --dataset "$DATASET" --algorithm "$ALGORITHM" \
  --download "$DEMO_DIR/downloads"

say "7/9 anyone can check the receipt: the provider's signature, the outputs and log held, the anchor on chain"
"$BRIZO" proof verify "$DEMO_DIR/downloads/receipt.json" --outputs "$DEMO_DIR/downloads/outputs" \
  --logs "$DEMO_DIR/downloads/algorithm.log" --keeper-url "$BRIZO_KEEPER_URL" --provider "$PUBLISHER_ADDRESS"

say "8/9 the operator's view (native API, bearer token), and an audit rerun pinned to the image digest"
"$BRIZO" job list
"$BRIZO" job rerun "$DEMO_DIR/downloads/receipt.json"

say "9/9 where everything is"
echo "    results store:  $DEMO_DIR/data/results/<job id>/ (outputs/, logs/algorithm.log, receipt.json)"
echo "    downloaded:     $DEMO_DIR/downloads/ (outputs/summary.json, algorithm.log, receipt.json)"
echo "    chain:          $DEMO_DIR/chain.json (addresses, development accounts), artifacts in $DEMO_DIR/artifacts"
echo "    service log:    $DEMO_DIR/brizo.log"
echo "    the summary:"
sed 's/^/      /' "$DEMO_DIR/downloads/outputs/summary.json" | head -14
echo "      ..."
echo "    dashboard:      $BRIZO_SERVER/ui (sign in with the operator token $BRIZO_ADMIN_TOKEN)"
if [ -n "${KEEP:-}" ]; then
  say "the service and the chain keep running for the dashboard; Ctrl-C stops them"
  wait "${PIDS[1]}"
else
  echo "    (make demo KEEP=1 keeps the service running to look at the dashboard)"
fi
