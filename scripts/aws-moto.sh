#!/usr/bin/env bash
# AWS Batch on this machine, through moto: `start` runs moto_server on 127.0.0.1:5000 (pidfile
# .state/moto.pid) with the Batch compute environment, queue and buckets the Terraform module
# would create, installs the runner where job hosts have it, and uploads the example dataset;
# `env` prints the variables the AWS SDKs read; `try` does everything end to end with
# config/examples/aws-moto.toml and stops what it started; `stop` stops moto.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PORT=5000
ENDPOINT="http://127.0.0.1:$PORT"
PIDFILE="$STATE_DIR/moto.pid"
RUNNER_HOST_PATH=/opt/brizo/brizo-runner

env_lines() {
  cat <<EOV
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_ENDPOINT=$ENDPOINT AWS_ALLOW_HTTP=true
EOV
}

start() {
  bash scripts/setup.sh
  bash scripts/test-deps.sh
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "moto already runs on $ENDPOINT (pid $(cat "$PIDFILE"))"
  else
    say "starting moto_server on $ENDPOINT (its AWS Batch runs jobs on the local Docker engine)"
    MOTO_DOCKER_NETWORK_MODE=host nohup moto_server -H 127.0.0.1 -p "$PORT" >"$STATE_DIR/moto.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  fi
  say "creating the Batch compute environment, job queue and buckets (as terraform/modules/aws would)"
  python3 scripts/moto-batch.py --endpoint "$ENDPOINT" --queue brizo-jobs --bucket brizo-staging --bucket brizo-data --bucket brizo-results
  say "installing the runner at $RUNNER_HOST_PATH (the launch template does this on real job hosts)"
  runner=$(bash scripts/runner.sh)
  install -D -m 0755 "$runner" "$RUNNER_HOST_PATH"
  say "uploading the example dataset to s3://brizo-data/weather/daily.csv"
  python3 - "$ENDPOINT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
s3.upload_file("examples/datasets/weather/daily.csv", "brizo-data", "weather/daily.csv")
PY
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "moto stopped"
  fi
}

try() {
  start
  trap 'kill $SERVICE 2>/dev/null; wait $SERVICE 2>/dev/null; stop; bash scripts/dockerd.sh stop' EXIT
  eval "$(env_lines)"
  export BRIZO_ADMIN_TOKEN=try-aws-operator-token
  build_shared
  try_summary aws-moto "s3://brizo-data/weather/daily.csv" "s3://brizo-data/weather/daily.csv: routed to AWS Batch" "in S3 under s3://brizo-results/brizo/<job id>/"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) env_lines ;;
  try) try ;;
  *) die "usage: $0 start|env|try|stop" ;;
esac
