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

LAB_TRANSITIONS: dict[str, frozenset[str]] = {
    LabStatus.EMPTY: frozenset({LabStatus.STARTING}),
    LabStatus.STARTING: frozenset({LabStatus.RUNNING, LabStatus.EMPTY}),
    LabStatus.RUNNING: frozenset({LabStatus.STARTING, LabStatus.EMPTY}),  # replaced when idle, or torn down
}


def sources_of(transitions: dict[str, frozenset[str]], target: str) -> frozenset[str]:
    """The states from which `target` may be reached."""
    return frozenset(source for source, targets in transitions.items() if target in targets)
