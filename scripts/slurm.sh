#!/usr/bin/env bash
# Usage: scripts/slurm.sh start|stop|token|env|stop-munge|try [DIR]
# A real one-node Slurm cluster on this machine (Debian's Slurm 22.05: munged, slurmctld, slurmd,
# slurmrestd with JWT), for the Slurm backend's tests, benchmark and `make try-slurm`.
#   start: installs what is missing, writes the cluster's config under DIR (default
#          .state/slurm), starts the daemons and waits until slurmrestd answers. Ports come from
#          SLURM_CTLD_PORT, SLURMD_PORT, SLURM_REST_PORT (defaults 6817, 6818, 6820) so that test
#          runs can have clusters of their own. PIDs go to DIR/*.pid.
#   stop:  stops the daemons this script started in DIR (by PID), and nothing else.
#   token: prints a JWT for root (jobs run as root: they start containers), valid 1 day.
#   env:   prints the environment a Slurm client needs for DIR (SLURM_CONF).
#   try:   `make try-slurm`: a job end to end through the service with config/examples/slurm.toml.
#   stop-munge: stops munged (one per machine, shared by every cluster) if this script started it.
source "$(dirname "$0")/lib.sh"
cmd="${1:-start}"
DIR="$(mkdir -p "${2:-$STATE_DIR/slurm}" && cd "${2:-$STATE_DIR/slurm}" && pwd)"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

stop_pid() {
  local f="$DIR/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f"); rm -f "$f"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

start_munge() {
  # One munged serves every cluster on the machine; started once, left to the machine. Two
  # clusters starting at once (two tests) take turns here: otherwise the second finds the
  # first's munged not answering yet, starts its own, and that one fails on the socket's lock.
  mkdir -p /run/munge
  exec 9>/run/brizo-munge-start.lock
  flock 9
  [ -S /run/munge/munge.socket.2 ] && munge -n >/dev/null 2>&1 && { flock -u 9; exec 9>&-; return 0; }
  [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge; chown munge:munge /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged 9>&-
  # Recorded so that whoever started it (make test) stops it: `scripts/slurm.sh stop-munge`.
  for _ in $(seq 1 40); do [ -f /run/munge/munged.pid ] && cp /run/munge/munged.pid "$STATE_DIR/munged.pid" && break; sleep 0.1; done
  for _ in $(seq 1 40); do munge -n >/dev/null 2>&1 && { flock -u 9; exec 9>&-; return 0; }; sleep 0.25; done
  die "munged did not start"
}

write_config() {
  local node; node=$(slurmd -C | head -1 | sed 's/ UpTime.*//')
  local name; name=$(echo "$node" | sed -n 's/^NodeName=\([^ ]*\).*/\1/p')
  mkdir -p "$DIR/spool/ctld" "$DIR/spool/d" "$DIR/log"
  chown -R slurm:slurm "$DIR/spool/ctld" "$DIR/log"
  if [ ! -f "$DIR/jwt_hs256.key" ]; then
    dd if=/dev/urandom of="$DIR/jwt_hs256.key" bs=32 count=1 2>/dev/null
  fi
  chown slurm:slurm "$DIR/jwt_hs256.key"; chmod 0600 "$DIR/jwt_hs256.key"
  cat >"$CONF" <<CONF
# Written by scripts/slurm.sh: a one-node cluster for brizo's tests.
ClusterName=brizo$(printf '%s' "$DIR" | cksum | cut -c1-6)
SlurmctldHost=$name(127.0.0.1)
SlurmctldPort=${SLURM_CTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$DIR/jwt_hs256.key
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/slurmctld.daemon.pid
SlurmdPidFile=$DIR/slurmd.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# Cancels and time limits: SIGTERM, then SIGKILL this many seconds later (the job script
# stops its container on SIGTERM).
KillWait=10
MinJobAge=600
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
# Each core takes up to 4 jobs at once: brizo sets each job's CPUs and memory from its
# limits, and a test run's jobs are mostly asleep.
PartitionName=brizo Nodes=$name Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

rest_up() { curl -s -o /dev/null "http://127.0.0.1:${SLURM_REST_PORT:-6820}/" 2>/dev/null; }

case "$cmd" in
start)
  apt_install slurmctld slurmd slurm-client munge slurmrestd slurm-wlm-jwt-plugin curl
  start_munge
  if [ -f "$DIR/slurmrestd.pid" ] && kill -0 "$(cat "$DIR/slurmrestd.pid")" 2>/dev/null && rest_up; then exit 0; fi
  write_config
  say "starting a one-node Slurm cluster (config: $CONF, logs: $DIR/log)"
  slurmctld -D -i >"$DIR/log/slurmctld.out" 2>&1 & echo $! >"$DIR/slurmctld.pid"
  slurmd -D >"$DIR/log/slurmd.out" 2>&1 & echo $! >"$DIR/slurmd.pid"
  # slurmrestd refuses to run as root or SlurmUser: it drops to nobody and authenticates each
  # request by its JWT.
  SLURM_JWT=daemon slurmrestd -u nobody -g nogroup -a rest_auth/jwt -s openapi/v0.0.38 \
    "127.0.0.1:${SLURM_REST_PORT:-6820}" >"$DIR/log/slurmrestd.out" 2>&1 & echo $! >"$DIR/slurmrestd.pid"
  for _ in $(seq 1 120); do
    if rest_up && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then exit 0; fi
    sleep 0.25
  done
  tail -5 "$DIR"/log/*.out "$DIR"/log/*.log >&2 || true
  die "the Slurm cluster did not come up in 30 s; see $DIR/log"
  ;;
stop)
  stop_pid slurmrestd; stop_pid slurmd; stop_pid slurmctld
  ;;
stop-munge)
  # Only the munged this script started.
  if [ -f "$STATE_DIR/munged.pid" ]; then
    pid=$(cat "$STATE_DIR/munged.pid"); rm -f "$STATE_DIR/munged.pid"
    kill "$pid" 2>/dev/null || true
    # Until it has gone (or only its zombie is left), so that a munged started next finds its
    # socket free.
    for _ in $(seq 1 50); do
      state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
      [ -z "$state" ] || [ "$state" = Z ] && break
      sleep 0.1
    done
  fi
  ;;
token)
  [ -f "$CONF" ] || die "no cluster in $DIR: run scripts/slurm.sh start first"
  scontrol token username=root lifespan=86400 | sed -n 's/^SLURM_JWT=//p'
  ;;
env)
  echo "SLURM_CONF=$CONF"
  ;;
try)
  # End to end with config/examples/slurm.toml; stops what it started.
  cd "$ROOT"
  bash scripts/setup.sh
  bash "$0" start
  trap 'kill $SERVICE 2>/dev/null; wait $SERVICE 2>/dev/null; bash "$ROOT/scripts/slurm.sh" stop; bash "$ROOT/scripts/slurm.sh" stop-munge; bash "$ROOT/scripts/dockerd.sh" stop' EXIT
  bash "$0" token >"$STATE_DIR/slurm/token"
  say "installing the runner at /opt/brizo/brizo-runner (on a real cluster: on every node)"
  runner=$(bash scripts/runner.sh)
  install -D -m 0755 "$runner" /opt/brizo/brizo-runner
  say "putting the example dataset on the \"shared filesystem\" /srv/brizo/shared/datasets"
  install -D -m 0644 examples/datasets/weather/daily.csv /srv/brizo/shared/datasets/weather/daily.csv
  chmod 0755 /srv /srv/brizo /srv/brizo/shared /srv/brizo/shared/datasets /srv/brizo/shared/datasets/weather
  export BRIZO_ADMIN_TOKEN=try-slurm-operator-token
  build_shared
  try_summary slurm "file:///srv/brizo/shared/datasets/weather/daily.csv" "the cluster's copy of the dataset: routed to Slurm" "the Slurm job: scontrol show job (SLURM_CONF=$CONF)"
  ;;
*) die "usage: $0 start|stop|token|env|stop-munge|try [DIR]" ;;
esac
