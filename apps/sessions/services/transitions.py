"""The only writers of `status` for sessions and session labs (tests/test_status_writes.py scans for it).

Both take a queryset and write with one UPDATE that also filters on the allowed source states, so a
row that moved on meanwhile is simply not counted: callers check the returned count (compare-and-swap).
"""

from django.db.models import QuerySet
from django.utils import timezone

from apps.sessions.lifecycle import LAB_TRANSITIONS, SESSION_TRANSITIONS, sources_of


def session_transition(*, sessions: QuerySet, to: str, **fields) -> int:
    """Move every session of `sessions` that may go to `to` there, writing `fields` too; returns the count."""
    if to not in SESSION_TRANSITIONS:
        raise ValueError(f"unknown session status {to!r}")
    return sessions.filter(status__in=sources_of(SESSION_TRANSITIONS, to)).update(status=to, **fields)


def session_lab_transition(*, labs: QuerySet, to: str, **fields) -> int:
    """The same for session labs (a worker's lab slot); `updated_at` is stamped."""
    if to not in LAB_TRANSITIONS:
        raise ValueError(f"unknown lab status {to!r}")
    fields.setdefault("updated_at", timezone.now())
    return labs.filter(status__in=sources_of(LAB_TRANSITIONS, to)).update(status=to, **fields)
