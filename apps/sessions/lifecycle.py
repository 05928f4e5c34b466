"""Session and shared-lab transitions and state groups: pure data (services/transitions.py enforces them).

The states themselves (SessionStatus, LabStatus) are in models.py, like every app's."""

from apps.sessions.models import LabStatus, SessionStatus

LIVE = frozenset({SessionStatus.WAITING, SessionStatus.ACTIVE})
FINISHED = frozenset({SessionStatus.ENDED, SessionStatus.REAPED})

SESSION_TRANSITIONS: dict[str, frozenset[str]] = {
    SessionStatus.WAITING: frozenset({SessionStatus.ACTIVE, SessionStatus.ENDED, SessionStatus.REAPED}),
    SessionStatus.ACTIVE: frozenset({SessionStatus.ENDED, SessionStatus.REAPED}),
    SessionStatus.ENDED: frozenset(),
    SessionStatus.REAPED: frozenset(),
}

# The journal's name of each session transition (`session.<event>`), by the state reached. REAPED is
# journalled by the reaping's bulk statements (services/queue.py, _reap_and_journal).
SESSION_EVENTS = {SessionStatus.ACTIVE: "activated", SessionStatus.ENDED: "ended", SessionStatus.REAPED: "reaped"}

LAB_TRANSITIONS: dict[str, frozenset[str]] = {
    LabStatus.EMPTY: frozenset({LabStatus.STARTING}),
    LabStatus.STARTING: frozenset({LabStatus.RUNNING, LabStatus.EMPTY}),
    LabStatus.RUNNING: frozenset({LabStatus.STARTING, LabStatus.EMPTY}),  # replaced when idle, or torn down
}

