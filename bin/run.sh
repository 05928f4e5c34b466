#!/usr/bin/env bash
# Start LabManager in the foreground: the simulators (unless real AWS / CML settings are given), demo
# data, the production servers on one machine (bin/serve all: nginx on HOST:PORT in front of gunicorn and
# daphne) and the django-q2 cluster. Ctrl-C (or SIGTERM) stops all of them.
# The simulators keep their state in SIM_STATE_DIR (var/sim): EC2 instances and CML labs outlive a restart as
# the database's workers and lablet instances do. Delete it together with the database to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
SIM_STATE_DIR=${SIM_STATE_DIR:-var/sim}

pids=()
stop() {  # TERM each process, give them STOP_GRACE seconds (default 20) to finish, then KILL what is left
  trap '' INT TERM  # a second Ctrl-C does not cut the stop short (it is bounded by STOP_GRACE)
  trap - EXIT
  echo "Stopping LabManager..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 $((${STOP_GRACE:-20} * 2))); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "process $pid ($(ps -o args= -p "$pid" | cut -c1-60)) did not stop in time: killed" >&2
      # with all its descendants (the q cluster's sentinel and workers; bin/serve's servers), listed before
      # the first KILL: an orphan would keep running (a daphne holding the port of the next start)
      # shellcheck disable=SC2046
      kill -KILL $(process_tree "$pid") 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}
process_tree() {  # $1 and its descendants, parents first
  echo "$1"
  local child
  for child in $(pgrep -P "$1" || true); do process_tree "$child"; done
}
trap stop INT TERM EXIT

wait_for_url() {  # $1 = URL; give up after 30 s
  for _ in $(seq 1 60); do
    $PY -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "timed out waiting for $1" >&2; return 1
}

if [ -z "${AWS_ENDPOINT_URL:-}" ] && [ -z "${AWS_ACCESS_KEY_ID:-}" ] && [ -z "${AWS_PROFILE:-}" ]; then
  EC2_SIM_PORT=${EC2_SIM_PORT:-5055}
  $PY -m simulators.ec2 --port "$EC2_SIM_PORT" --state-file "$SIM_STATE_DIR/ec2.pickle" >/dev/null &
  pids+=($!)
  export AWS_ENDPOINT_URL="http://127.0.0.1:$EC2_SIM_PORT" AWS_ACCESS_KEY_ID=simulated AWS_SECRET_ACCESS_KEY=simulated
  export WORKER_AMI_ID=${WORKER_AMI_ID:-ami-12c6146b}
  wait_for_url "$AWS_ENDPOINT_URL/moto-api/" || true
  echo "EC2 simulator (moto) on $AWS_ENDPOINT_URL"
fi
if [ -z "${CML_URL_OVERRIDE:-}" ] && [ -z "${CML_PASSWORD:-}" ]; then
  CML_SIM_PORT=${CML_SIM_PORT:-5056}
  $PY -m simulators.cml --port "$CML_SIM_PORT" --boot-delay "${CML_SIM_BOOT_DELAY:-5}" \
    --state-file "$SIM_STATE_DIR/cml.json" >/dev/null &
  pids+=($!)
  # The simulator speaks plain http on loopback: allowed here only (production refuses http to CML).
  export CML_URL_OVERRIDE="http://127.0.0.1:$CML_SIM_PORT" CML_USERNAME=admin CML_PASSWORD=sim-password CML_ALLOW_HTTP=true
  # Console entries name the simulator's PATty listeners (telnet 127.0.0.1 <port>), never a worker's EC2 address.
  export CONSOLE_HOST=${CONSOLE_HOST:-127.0.0.1}
  wait_for_url "$CML_URL_OVERRIDE/api/v0/system_information"
  echo "CML simulator on $CML_URL_OVERRIDE (faults: POST $CML_URL_OVERRIDE/_sim/faults)"
fi

# Reconcile the workers with EC2 (instances that vanished, e.g. the simulators' state was deleted, are marked
# terminated), then seed: idempotent, it creates only the demo workers and bookings that are missing.
$PY manage.py sync_workers >/dev/null
$PY manage.py seed_demo
$PY manage.py sync_workers

bin/serve qcluster &
pids+=($!)
HOST=$HOST PORT=$PORT bin/serve all &
pids+=($!)
wait_for_url "http://$HOST:$PORT/api/diagnostics/health"
echo "LabManager is up at http://$HOST:$PORT/  (API docs: http://$HOST:$PORT/api/docs, admin: http://$HOST:$PORT/admin/)"
# Exit (and stop the others) as soon as one process ends.
wait -n
