#!/usr/bin/env bash
# What a local chain needs, from the npm registry, into .state/tools (idempotent):
#  - anvil (npm @foundry-rs/anvil-linux-amd64), the local Ethereum node;
#  - the real Ocean keeper contracts 0.13.2 (npm @oceanprotocol/keeper-contracts), abi + bytecode.
# Prints nothing else; `brizo chain dev` finds both under .state/tools by default.
source "$(dirname "$0")/lib.sh"
TOOLS="$STATE_DIR/tools"
mkdir -p "$TOOLS"
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [ ! -x "$TOOLS/node_modules/.bin/anvil" ]; then
  say "installing anvil from npm (@foundry-rs/anvil-linux-amd64)"
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund @foundry-rs/anvil-linux-amd64 >/dev/null) || die "npm could not install anvil"
fi
ANVIL=$(find "$TOOLS/node_modules/@foundry-rs" -type f -name anvil -perm -u+x 2>/dev/null | head -1)
[ -n "$ANVIL" ] || ANVIL="$TOOLS/node_modules/.bin/anvil"
ln -sf "$ANVIL" "$TOOLS/anvil"
KC="$TOOLS/keeper-contracts-0.13.2"
if [ ! -f "$KC/artifacts/DIDRegistry.development.json" ]; then
  say "fetching the Ocean keeper contracts 0.13.2 artifacts from npm"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @oceanprotocol/keeper-contracts@0.13.2 >/dev/null) || die "npm could not fetch @oceanprotocol/keeper-contracts@0.13.2"
  mkdir -p "$KC"
  tar -xzf "$tmp"/oceanprotocol-keeper-contracts-0.13.2.tgz -C "$KC" --strip-components=1 package/artifacts package/package.json
  rm -rf "$tmp"
fi
"$TOOLS/anvil" --version >/dev/null 2>&1 || die "anvil does not run: $TOOLS/anvil"
