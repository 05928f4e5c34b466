"""Session and shared-lab states and the allowed edges: pure data (services/transitions.py enforces them)."""

from django.db import models


class SessionStatus(models.TextChoices):
    WAITING = "waiting"  # in the pool's FIFO queue, position 1..n
    ACTIVE = "active"  # bound to one worker of the pool, position 0
    ENDED = "ended"  # DELETE /session/{id} or an operator ended it
    # Not heard from within the stale timeout. Not stored: a reaped session's row is deleted when it is
    # journalled as session.reaped (services/queue.py, _reap_and_journal); rows of older versions in
    # this state are deleted by the purge.
    REAPED = "reaped"


class LabStatus(models.TextChoices):
    EMPTY = "empty"  # no lab on the worker (or the last one was handed to a teardown)
    STARTING = "starting"  # an acquire is importing/starting it on CML
    RUNNING = "running"  # up; ref_count sessions hold a claim on it (0: idle, may be replaced)


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
