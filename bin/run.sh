#!/usr/bin/env bash
# Start the ASGI server (daphne) and the django-q2 cluster in the foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "Stopping LabManager..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

$PY manage.py qcluster &
pids+=($!)
.venv/bin/daphne -b "$HOST" -p "$PORT" labmanager.asgi:application &
pids+=($!)
echo "LabManager is up at http://$HOST:$PORT/  (API docs: http://$HOST:$PORT/api/docs, admin: http://$HOST:$PORT/admin/)"
# Exit (and stop the other) as soon as either process ends.
wait -n
