#!/usr/bin/env bash
# Builds brizo-runner, the static binary remote backends run inside job containers
# (backends/runner). Static (musl) so it works in any image, whatever its libc.
# Prints the binary's path on stdout. Idempotent: cargo rebuilds only what changed.
source "$(dirname "$0")/lib.sh"
TARGET=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  say "adding the Rust target $TARGET (for the static runner)" >&2
  rustup target add "$TARGET" >&2
fi
# ring (TLS) compiles C for the target: musl-gcc comes with musl-tools.
apt_install musl-tools >&2
cd "$ROOT"
say "building brizo-runner (static, $TARGET)" >&2
cargo build --locked --release --quiet --target "$TARGET" -p brizo-runner --features bin >&2
echo "$ROOT/target/$TARGET/release/brizo-runner"
