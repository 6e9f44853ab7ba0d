#!/usr/bin/env bash
# `make bench`: end-to-end time of a trivial job through the API against the bare Docker
# create/start/wait/remove of the same image, in one run; prints the ratio and the phases.
# Then the same on AWS Batch (moto) against a bare SDK SubmitJob -> SUCCEEDED loop, and on
# Slurm against a bare slurmrestd submit -> COMPLETED loop running the same image, on Azure
# Batch (a stand-in server, Blob on Azurite) against a bare REST Task_Add -> completed loop, and
# on a stand-in Google Batch server against a bare REST jobs.create -> SUCCEEDED loop.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup.sh"
trap 'bash "$ROOT/scripts/slurm.sh" stop-munge; bash "$ROOT/scripts/dockerd.sh" stop' EXIT
cd "$ROOT"
apt_install wrk
# Every bench adds its figures here; the table is printed at the end.
export BRIZO_BENCH_TABLE="$ROOT/target/bench-table.tsv"
mkdir -p "$ROOT/target" && : >"$BRIZO_BENCH_TABLE"
say "benchmark (release build; the first one compiles for a few minutes)"
cargo bench --locked --bench e2e
say "the hot read paths under load (wrk): job status, health, v1 status on a local chain, against the server's 401 rate"
bash "$ROOT/scripts/chain-deps.sh"
cargo bench --locked --bench http
say "job throughput (a burst through the API against bare Docker, 4 at a time) and memory"
cargo bench --locked --bench throughput
say "AWS Batch benchmark on moto (cargo feature aws; its release build takes several minutes more)"
bash "$ROOT/scripts/test-deps.sh"
bash "$ROOT/scripts/runner.sh" >/dev/null
cargo bench --locked --features aws --bench aws
say "Slurm benchmark on a one-node cluster (cargo feature slurm)"
cargo bench --locked --features aws,slurm --bench slurm
say "Azure Batch benchmark on the stand-in Batch server and Azurite (cargo feature azure)"
cargo bench --locked --features aws,slurm,azure --bench azure
say "Google Batch benchmark on a STAND-IN Batch server and fake-gcs-server (cargo feature gcp)"
cargo bench --locked --features aws,slurm,azure,gcp --bench gcp

say "summary: each figure against its baseline measured in the same run"
{ printf 'figure\tvalue\tbaseline\tratio\tgoal\tmet\n'; cat "$BRIZO_BENCH_TABLE"; } |
  awk -F'\t' '{ printf "%-44s %-30s %-26s %6s  %-8s %s\n", $1, $2, $3, $4, $5, $6 }'
