"""Stale reaping: active sessions silent for SESSION_ACTIVE_STALE_SECONDS, waiting ones for
SESSION_WAITING_STALE_SECONDS, by the schedule (the command, the task) and when the queue is read;
claims released, the next promoted, an audit row each; bulk statements."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_seal
from apps.audit.verify import chain_verify
from apps.sessions import services
from apps.sessions.models import LabClaim, Session, SessionLab, SessionPool
from apps.sessions.selectors import Principal
from apps.sessions.tasks import reap_sessions
from tests.sessions.conftest import BASE, acquire, assert_problem, create, status_of

pytestmark = pytest.mark.django_db
ANON = Principal(user_id=None, actor="tests")


def _silent_for(session_id, seconds):
    Session.objects.filter(pk=session_id).update(last_seen_at=timezone.now() - timedelta(seconds=seconds))


def test_an_active_session_silent_past_its_timeout_is_reaped_and_the_next_promoted(anon, worker, storage_dir):
    active, waiting = create(anon)["session_id"], create(anon)["session_id"]
    acquire(anon, active)
    assert (storage_dir / active).is_dir()
    _silent_for(active, 301)

    counts = reap_sessions()

    assert counts["reaped_active"] == 1 and counts["promoted"] == 1
    assert not Session.objects.filter(pk=active).exists()  # reaped: the row is gone, the journal tells its story
    promoted = Session.objects.get(pk=waiting)
    assert (promoted.status, promoted.position, promoted.worker_id) == ("active", 0, worker.pk)
    lab = SessionLab.objects.get(worker=worker)
    assert (lab.status, lab.ref_count) == ("running", 0)  # the claim is gone, the lab stays for reuse
    assert not LabClaim.objects.exists()
    assert not (storage_dir / active).exists()
    event = AuditEvent.objects.get(event_type="session.reaped")
    assert (event.resource_id, event.metadata["from"]) == (active, "active")
    assert AuditEvent.objects.filter(event_type="session.activated", resource_id=waiting).exists()


def test_an_active_session_within_its_timeout_is_kept(anon, worker):
    active = create(anon)["session_id"]
    _silent_for(active, 299)

    assert reap_sessions()["reaped_active"] == 0
    assert Session.objects.get(pk=active).status == "active"


def test_waiting_sessions_are_reaped_after_their_own_longer_timeout_and_the_queue_closes_up(anon, worker):
    ids = [create(anon)["session_id"] for _ in range(5)]
    _silent_for(ids[1], 601)
    _silent_for(ids[3], 601)
    _silent_for(ids[2], 400)  # stale for an active session, not for a waiting one

    counts = reap_sessions()

    assert (counts["reaped_waiting"], counts["reaped_active"]) == (2, 0)
    remaining = Session.objects.filter(status__in=["waiting", "active"]).order_by("ticket")
    assert [(str(s.pk), s.position) for s in remaining] == [(ids[0], 0), (ids[2], 1), (ids[4], 2)]
    assert Session.objects.count() == 3  # the reaped rows are gone
    assert set(AuditEvent.objects.filter(event_type="session.reaped").values_list("resource_id", flat=True)) == {
        ids[1], ids[3]}


def test_reading_the_queue_reaps_when_the_pass_is_due(anon, worker, settings):
    settings.SESSION_SWEEP_INTERVAL_SECONDS = 0
    active, waiting = create(anon)["session_id"], create(anon)["session_id"]
    _silent_for(active, 301)

    body = status_of(anon, waiting).json()

    assert (body["status"], body["position"]) == ("active", 0)
    assert_problem(status_of(anon, active), 404, "Session not found")


def test_a_read_does_not_reap_again_before_the_sweep_interval(anon, worker, settings):
    settings.SESSION_SWEEP_INTERVAL_SECONDS = 3600
    active, waiting = create(anon)["session_id"], create(anon)["session_id"]
    status_of(anon, waiting)  # the first read of the pool runs the pass
    _silent_for(active, 301)

    assert status_of(anon, waiting).json()["status"] == "waiting"
    assert Session.objects.get(pk=active).status == "active"


def test_a_reaped_session_is_gone_for_heartbeats_and_lab_calls(anon, worker):
    active = create(anon)["session_id"]
    _silent_for(active, 301)
    reap_sessions()

    assert_problem(anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=active), 404)
    assert_problem(acquire(anon, active), 404)
    assert_problem(anon.delete(f"{BASE}/session/{active}"), 404)


def test_the_command_runs_one_pass_and_prints_the_counts(anon, worker, capsys):
    ids = [create(anon)["session_id"] for _ in range(3)]
    _silent_for(ids[0], 301)
    _silent_for(ids[2], 601)

    call_command("reap_sessions")

    out = capsys.readouterr().out
    assert "reaped_waiting=1" in out and "reaped_active=1" in out and "promoted=1" in out


def test_a_pass_before_any_pool_exists_does_nothing():
    assert not SessionPool.objects.exists()  # a fresh install: the schedule runs before the first session

    assert services.sessions_reap() == {"reaped_waiting": 0, "reaped_active": 0, "promoted": 0}
    assert reap_sessions()["reaped_waiting"] == 0  # the whole scheduled pass


def test_the_schedule_is_declared(settings):
    assert settings.Q_SCHEDULES["reap_sessions"] == {
        "func": "apps.sessions.tasks.reap_sessions", "schedule_type": "I", "minutes": 1}


def test_reaping_many_sessions_is_a_few_bulk_statements(worker):
    pool = services.pool_get_or_create()
    old = timezone.now() - timedelta(hours=1)
    Session.objects.bulk_create(
        Session(pool=pool, ticket=n + 1, position=n + 1, actor="bulk", created_at=old, last_seen_at=old)
        for n in range(2000))
    SessionPool.objects.filter(pk=pool.pk).update(next_ticket=2001)

    with CaptureQueriesContext(connection) as queries:
        counts = services.sessions_reap()

    assert counts["reaped_waiting"] == 2000
    assert AuditEvent.objects.filter(event_type="session.reaped").count() == 2000
    ours = [q["sql"] for q in queries if "audit_auditevent" not in q["sql"]]  # the journal batches its own
    assert len(ours) < 15, ours


def test_each_reaped_session_is_journalled_with_its_pool_former_state_and_last_sighting(anon, worker):
    active, waiting = create(anon)["session_id"], create(anon)["session_id"]
    _silent_for(active, 301)
    _silent_for(waiting, 601)
    last_seen = {str(s.pk): s.last_seen_at for s in Session.objects.all()}

    reap_sessions()
    audit_seal()  # the test transaction never commits: seal as the commit would

    events = {e.resource_id: e for e in AuditEvent.objects.filter(event_type="session.reaped")}
    assert set(events) == {active, waiting}
    for session_id, was in ((active, "active"), (waiting, "waiting")):
        event = events[session_id]
        assert event.metadata == {"pool": "default", "from": was, "last_seen_at": last_seen[session_id].isoformat()}
        assert (event.actor, event.action, event.resource_type, event.success) == (
            "system", "session.reaped", "session", True)
    assert chain_verify().valid


def test_old_history_is_purged(anon, worker, settings):
    settings.SESSION_HISTORY_DAYS = 7
    old, recent = create(anon)["session_id"], create(anon)["session_id"]
    for session_id in (old, recent):
        anon.delete(f"{BASE}/session/{session_id}")
    Session.objects.filter(pk=old).update(ended_at=timezone.now() - timedelta(days=8))

    assert reap_sessions()["sessions_purged"] == 1
    assert list(Session.objects.values_list("pk", flat=True)) == [Session.objects.get(pk=recent).pk]


def test_stray_upload_directories_are_swept(anon, worker, storage_dir):
    active = create(anon)["session_id"]
    acquire(anon, active)
    stray = storage_dir / "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"
    stray.mkdir()
    (stray / "x.yml").write_text("x")

    assert reap_sessions()["upload_dirs_removed"] == 1
    assert not stray.exists() and (storage_dir / active).is_dir()
