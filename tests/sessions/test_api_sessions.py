"""The seed's /session rows: POST /session, GET and DELETE /session/{id}, POST /session/heartbeat."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.sessions import shutdown
from apps.sessions.models import Session
from tests.sessions.conftest import BASE, assert_problem, create, status_of

pytestmark = pytest.mark.django_db


def test_create_answers_201_with_a_uuid4_and_position_0_when_a_worker_is_free(anon, worker):
    body = create(anon)

    assert set(body) == {"session_id", "position"}
    assert uuid.UUID(body["session_id"]).version == 4
    assert body["position"] == 0
    session = Session.objects.get(pk=body["session_id"])
    assert (session.status, session.worker_id) == ("active", worker.pk)


def test_a_session_without_a_free_worker_waits_with_its_position(anon, worker):
    create(anon)
    second, third = create(anon), create(anon)

    assert (second["position"], third["position"]) == (1, 2)
    body = status_of(anon, third["session_id"]).json()
    assert (body["status"], body["position"], body["pool"], body["worker"]) == ("waiting", 2, "default", None)


def test_get_session_reports_status_position_and_the_extras(anon, worker):
    created = create(anon)

    response = status_of(anon, created["session_id"])

    assert response.status_code == 200
    body = response.json()
    assert list(body)[:2] == ["status", "position"]  # the seed's fields first
    assert (body["status"], body["position"], body["worker"]) == ("active", 0, worker.public_id)
    assert body["estimated_wait_seconds"] == 0


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_get_of_an_unknown_session_is_404_problem(anon, session_id):
    assert_problem(status_of(anon, session_id), 404, "Session not found")


def test_polling_refreshes_last_seen_at(anon, worker):
    created = create(anon)
    a_minute_ago = timezone.now() - timedelta(seconds=60)
    Session.objects.filter(pk=created["session_id"]).update(last_seen_at=a_minute_ago)

    status_of(anon, created["session_id"])

    assert Session.objects.get(pk=created["session_id"]).last_seen_at > a_minute_ago + timedelta(seconds=59)


def test_delete_ends_the_session_answers_204_and_then_it_is_unknown(anon, worker):
    created = create(anon)

    response = anon.delete(f"{BASE}/session/{created['session_id']}")

    assert response.status_code == 204 and response.content == b""
    assert Session.objects.get(pk=created["session_id"]).status == "ended"
    assert_problem(status_of(anon, created["session_id"]), 404, "Session not found")
    assert_problem(anon.delete(f"{BASE}/session/{created['session_id']}"), 404, "Session not found")


def test_delete_of_the_active_session_promotes_the_next(anon, worker):
    first, second = create(anon), create(anon)

    anon.delete(f"{BASE}/session/{first['session_id']}")

    body = status_of(anon, second["session_id"]).json()
    assert (body["status"], body["position"], body["worker"]) == ("active", 0, worker.public_id)


def test_during_shutdown_deleting_an_unknown_session_answers_204(anon):
    shutdown.begin_shutdown()

    assert anon.delete(f"{BASE}/session/{uuid.uuid4()}").status_code == 204


def test_heartbeat_answers_204_for_waiting_and_active_sessions(anon, worker):
    active, waiting = create(anon), create(anon)
    a_minute_ago = timezone.now() - timedelta(seconds=60)
    Session.objects.update(last_seen_at=a_minute_ago)

    for session_id in (active["session_id"], waiting["session_id"]):
        response = anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=session_id)
        assert response.status_code == 204 and response.content == b""

    assert all(s.last_seen_at > a_minute_ago + timedelta(seconds=59) for s in Session.objects.all())


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "junk"])
def test_heartbeat_of_an_unknown_session_is_404(anon, session_id):
    assert_problem(anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=session_id), 404, "Session not found")


def test_heartbeat_without_the_header_is_422(anon):
    body = assert_problem(anon.post(f"{BASE}/session/heartbeat"), 422)
    assert "X-Session-ID" in body["errors"]


def test_heartbeat_of_an_ended_session_is_404(anon, worker):
    created = create(anon)
    anon.delete(f"{BASE}/session/{created['session_id']}")

    assert_problem(anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=created["session_id"]), 404)
