"""The one writer of session and session-lab status: checks the edge, writes by compare-and-swap and
journals the change once, in one transaction (docs/lifecycle.md)."""

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.errors import InvalidTransition
from apps.sessions.models import LabStatus, Session, SessionLab, SessionPool, SessionStatus
from apps.sessions.services.transitions import session_lab_transition, session_transition
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db


def _session(status=SessionStatus.WAITING) -> Session:
    pool, _ = SessionPool.objects.get_or_create(name="transitions")
    now = timezone.now()
    return Session.objects.create(pool=pool, ticket=Session.objects.count() + 1, status=status, actor="tests",
                                  created_at=now, last_seen_at=now)


def _journal(resource_type: str, resource_id) -> list[str]:
    return list(AuditEvent.objects.filter(resource_type=resource_type, resource_id=str(resource_id))
                .order_by("id").values_list("event_type", flat=True))


def test_ending_a_session_writes_it_and_journals_session_ended_once():
    session = _session()

    assert session_transition(session_id=session.pk, source=SessionStatus.WAITING, to=SessionStatus.ENDED,
                              actor="tests", metadata={"reason": "done"}, end_reason="done")

    session.refresh_from_db()
    assert (session.status, session.end_reason) == (SessionStatus.ENDED, "done")
    assert _journal("session", session.pk) == ["session.ended"]


def test_a_session_that_moved_on_is_neither_written_nor_journalled():
    session = _session(status=SessionStatus.ACTIVE)

    assert not session_transition(session_id=session.pk, source=SessionStatus.WAITING, to=SessionStatus.ACTIVE,
                                  actor="tests", metadata={})

    assert _journal("session", session.pk) == []


def test_it_refuses_an_edge_that_is_not_in_the_table():
    session = _session(status=SessionStatus.ENDED)

    with pytest.raises(InvalidTransition):
        session_transition(session_id=session.pk, source=SessionStatus.ENDED, to=SessionStatus.ACTIVE,
                           actor="tests", metadata={})


def test_a_lab_slot_transition_is_journalled_with_the_lab_it_dropped():
    slot = SessionLab.objects.create(worker=WorkerFactory(), status=LabStatus.RUNNING, cml_lab_id="lab-1",
                                     topology_sha256="a" * 64)

    assert session_lab_transition(lab=slot, to=LabStatus.EMPTY, actor="tests", reason="destroyed", cml_lab_id="",
                                  topology_sha256="")

    event = AuditEvent.objects.get(resource_type="session_lab", resource_id=str(slot.pk))
    assert event.event_type == "session_lab.empty"
    assert event.metadata["from"] == "running" and event.metadata["cml_lab_id"] == "lab-1"
    with pytest.raises(InvalidTransition):
        session_lab_transition(lab=SessionLab.objects.get(pk=slot.pk), to=LabStatus.RUNNING, actor="tests", reason="")


def test_many_sessions_move_with_one_update_each_and_one_journal_insert():
    """A promotion hands out several workers at once (services/queue.py _promote): the journal rows of all
    the sessions moved go in one INSERT, not one per session; a session that moved on is left out."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.sessions.services.transitions import session_transitions_many

    sessions = [_session() for _ in range(5)]
    gone = _session(status=SessionStatus.ENDED)
    moves = [(s.pk, {"activated_at": timezone.now()}, {"pool": "transitions", "n": n}) for n, s in enumerate(sessions)]

    with CaptureQueriesContext(connection) as queries:
        moved = session_transitions_many(moves=[*moves, (gone.pk, {}, {})], source=SessionStatus.WAITING,
                                         to=SessionStatus.ACTIVE, actor="tests")

    assert moved == [s.pk for s in sessions]
    inserts = [q["sql"] for q in queries if q["sql"].startswith('INSERT INTO "audit_auditevent"')]
    assert len(inserts) == 1, inserts
    assert [_journal("session", s.pk) for s in sessions] == [["session.activated"]] * 5
    assert _journal("session", gone.pk) == []
    assert sorted(AuditEvent.objects.filter(event_type="session.activated").values_list("metadata__n", flat=True)) == [
        0, 1, 2, 3, 4]
