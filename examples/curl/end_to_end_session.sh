#!/usr/bin/env bash
# End-to-end remote-lab session via the REST API (the seed's walk-through, on LabManager).
#
# Walks: create a session -> wait for ACTIVE -> upload topology -> release ->
# delete session. Use as a copy-pasteable reference; for production the Python
# client is preferred (examples/scripts/smoke.py, docs/remote-lab.md).
#
# Usage:
#   BASE_URL=http://127.0.0.1:8000/api/remote-lab \
#     ./examples/curl/end_to_end_session.sh examples/topologies/two-routers.yaml
#
# Optional environment:
#   REMOTE_LAB_API_KEY  sent as X-API-Key (anonymous clients are accepted only from the
#                       server's SESSION_ANONYMOUS_NETWORKS, loopback by default)
#   WAIT_TIMEOUT        seconds to wait for the session to become ACTIVE (default 600)
#   POLL_INTERVAL       seconds between polls while waiting (default 2)
# Needs curl and jq. Exits non-zero on any HTTP error (the problem+json body is printed).
set -euo pipefail

: "${BASE_URL:?BASE_URL must be set, e.g. BASE_URL=http://127.0.0.1:8000/api/remote-lab}"
TOPOLOGY="${1:?Usage: BASE_URL=http://HOST:PORT/api/remote-lab $0 <topology.yaml>}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-600}"
POLL_INTERVAL="${POLL_INTERVAL:-2}"
[[ -r "$TOPOLOGY" ]] || { echo "cannot read topology file: $TOPOLOGY" >&2; exit 2; }

# -sS: quiet but show errors; --fail-with-body: exit 22 on an HTTP error, printing the error body.
CURL=(curl -sS --fail-with-body)
if [[ -n "${REMOTE_LAB_API_KEY:-}" ]]; then
  CURL+=(-H "X-API-Key: ${REMOTE_LAB_API_KEY}")
fi

SESSION_ID=""
end_session() {
  # If the script stops half-way, end the session so it does not hold a worker until it is reaped.
  if [[ -n "$SESSION_ID" ]]; then
    "${CURL[@]}" -o /dev/null -X DELETE "$BASE_URL/session/$SESSION_ID" || true
  fi
}
trap end_session EXIT

# 1. Create a session (it is ACTIVE at once when the queue is empty and a worker is free)
SESSION_ID=$("${CURL[@]}" -X POST "$BASE_URL/session" | jq -r .session_id)
echo "session $SESSION_ID"

# 2. Wait for ACTIVE (bounded by WAIT_TIMEOUT)
deadline=$((SECONDS + WAIT_TIMEOUT))
while true; do
  BODY=$("${CURL[@]}" "$BASE_URL/session/$SESSION_ID")
  STATUS=$(jq -r .status <<<"$BODY")
  [[ "$STATUS" == "active" ]] && break
  if ((SECONDS >= deadline)); then
    echo "session $SESSION_ID not active after ${WAIT_TIMEOUT}s: $BODY" >&2
    exit 1
  fi
  echo "waiting: position $(jq -r .position <<<"$BODY"), estimated wait $(jq -r 'if .estimated_wait_seconds == null then "unknown" else "\(.estimated_wait_seconds)s" end' <<<"$BODY")"
  sleep "$POLL_INTERVAL"
done
echo "session $SESSION_ID is active"

# 3. Acquire the lab (starts it, or attaches to the same topology already running)
"${CURL[@]}" -X POST "$BASE_URL/lab" \
  -H "X-Session-ID: $SESSION_ID" \
  -F "topology=@${TOPOLOGY}" \
  -F "reuse=true" | jq .

# 4. Run your automation against the devices listed in the response...

# 5. Release the ref-count, then end the session
"${CURL[@]}" -X POST "$BASE_URL/lab/release" -H "X-Session-ID: $SESSION_ID"
"${CURL[@]}" -X DELETE "$BASE_URL/session/$SESSION_ID"
SESSION_ID=""
echo "released the lab and ended the session"
