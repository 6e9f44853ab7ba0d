#!/usr/bin/env bash
# Usage: scripts/dockerd.sh start|stop
# start: installs docker.io when missing and starts dockerd unless an engine already answers.
#        When this script started it, its PID goes to .state/dockerd.pid so `stop` ends only that one.
# stop:  stops the dockerd this script started (by PID), and nothing else.
source "$(dirname "$0")/lib.sh"
DOCKER=/usr/bin/docker   # Debian's client; matches the engine's API 1.41
PIDFILE="$STATE_DIR/dockerd.pid"

engine_up() { [ -S /var/run/docker.sock ] && "$DOCKER" version >/dev/null 2>&1; }

case "${1:-start}" in
start)
  apt_install docker.io
  if engine_up; then exit 0; fi
  say "starting dockerd (log: $STATE_DIR/dockerd.log)"
  dockerd >"$STATE_DIR/dockerd.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do engine_up && exit 0; sleep 0.5; done
  tail -20 "$STATE_DIR/dockerd.log" >&2
  die "dockerd did not come up in 30 s; see $STATE_DIR/dockerd.log"
  ;;
stop)
  [ -f "$PIDFILE" ] || exit 0
  pid=$(cat "$PIDFILE"); rm -f "$PIDFILE"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping the dockerd we started (pid $pid)"
    kill "$pid"; for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  ;;
*) die "usage: $0 start|stop" ;;
esac
