# Shared helpers for the project's scripts. Sourced, not run.
# Every step is idempotent: it checks before it installs or starts anything.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${BRIZO_STATE_DIR:-$ROOT/.state}"
mkdir -p "$STATE_DIR"

say()  { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
# timed NAME CMD...: runs CMD and says how long the stage NAME took.
timed() {
  local name=$1 start=$SECONDS; shift
  "$@"
  say "$name took $((SECONDS - start)) s" >&2
}
# The one build `make test` and every `make try-*` share: every backend, and the crash tests'
# fault injection (inert unless FAILPOINTS is set), built the way the test suite builds it
# (dev-dependencies add features to shared crates, and a build without them would compile
# those crates and everything above them again). Whichever runs first builds it; the others
# find it done. `make demo` builds the default features only: a newcomer's first build stays
# lean.
TEST_FEATURES="brizo/aws,brizo/slurm,brizo/azure,brizo/gcp,brizo/object-stores,brizo/failpoints"
build_shared() {
  say "building brizo with every backend (shared with make test and the other try-* targets; about 5 minutes the first time on 2 cores, seconds after)"
  cargo test --workspace --locked --features "$TEST_FEATURES" --no-run
}
# try_summary NAME INPUT ROUTED STORED: a `make try-*` target's run. Serves
# config/examples/NAME.toml on 127.0.0.1:8030 (as $SERVICE, for the caller's EXIT trap to
# stop), runs the weather summary on INPUT (ROUTED says where it goes) and downloads its
# outputs; STORED says where else they are. After build_shared.
try_summary() {
  local name=$1 input=$2 routed=$3 stored=$4
  local log="$STATE_DIR/$name-service.log"
  BRIZO="$ROOT/target/debug/brizo"
  rm -rf "data/$name"
  say "serving with config/examples/$name.toml on 127.0.0.1:8030 (log: $log)"
  "$BRIZO" serve --config "config/examples/$name.toml" >"$log" 2>&1 &
  SERVICE=$!
  for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:8030/health >/dev/null && break
    kill -0 $SERVICE 2>/dev/null || { cat "$log" >&2; die "brizo serve stopped"; }
    sleep 0.2
  done
  say "running the weather summary on $routed"
  "$BRIZO" job run --image brizo/python:3.11-bookworm --algorithm examples/algorithms/weather_summary.py \
    --input "weather=$input" --download "$STATE_DIR/$name-results"
  say "outputs downloaded to $STATE_DIR/$name-results; $stored"
}
warn() { printf '\033[1;33m!! \033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31mxx \033[0m %s\n' "$*" >&2; exit 1; }

apt_install() {
  # apt_install PKG... : installs the Debian packages that are missing.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ ! -f "$STATE_DIR/apt-updated" ]; then apt-get update -qq && touch "$STATE_DIR/apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
