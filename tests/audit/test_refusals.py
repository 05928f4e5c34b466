"""A refused state-changing API call is journalled too: one `api_call.refused` event, who, why, from where."""

import uuid

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import REFUSED_EVENT
from apps.workers.services import worker_transition
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db


def _new_events(before: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=before).order_by("pk"))


def _last_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_a_refused_transition_is_journalled_once_with_who_why_and_where(operator_client, operator_user):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    before = _last_pk()

    response = operator_client.post(f"/api/workers/{worker.public_id}/start", REMOTE_ADDR="10.9.8.7")

    assert response.status_code == 409
    [event] = _new_events(before)
    assert (event.event_type, event.success) == (REFUSED_EVENT, False)
    assert event.user_id == operator_user.username
    assert event.api_key_prefix == operator_client.raw_key[:10]
    assert event.ip_address == "10.9.8.7"
    assert event.trace_id == response["X-Trace-Id"] == response.json()["trace_id"]
    assert event.error == response.json()["detail"]
    assert (event.resource_type, event.resource_id) == ("api_call", f"/api/workers/{worker.public_id}/start")
    assert event.metadata["status"] == 409 and event.metadata["method"] == "POST"
    assert event.metadata["title"] == response.json()["title"]
    assert event.action.startswith("POST ")


def test_a_validation_refusal_keeps_the_field_errors(operator_client):
    before = _last_pk()

    response = operator_client.post("/api/workers", {"aws_instance_id": "not-an-id", "aws_region": "us-west-2"},
                                    format="json")

    assert response.status_code == 422
    [event] = _new_events(before)
    assert event.event_type == REFUSED_EVENT
    assert event.metadata["errors"] == response.json()["errors"]


def test_a_forbidden_change_is_journalled(instructor_client, instructor_user):
    before = _last_pk()

    assert instructor_client.post("/api/audit/verify").status_code == 403

    [event] = _new_events(before)
    assert (event.event_type, event.user_id, event.metadata["status"]) == (REFUSED_EVENT, instructor_user.username, 403)


def test_reads_and_unauthenticated_calls_are_not_journalled(operator_client, anon_client):
    before = _last_pk()

    assert operator_client.get("/api/workers/wkr-nope").status_code == 404
    assert anon_client.post("/api/workers", {"name": "x"}, format="json").status_code == 401
    bad_key = type(anon_client)()
    bad_key.credentials(HTTP_X_API_KEY="lm_not_a_key")
    assert bad_key.post("/api/workers", {"name": "x"}, format="json").status_code == 401

    assert _new_events(before) == []


def test_throttled_calls_are_not_journalled(operator_client, settings):
    settings.API_RATE_LIMIT = "2/min"
    settings.API_RATE_BURST = 2  # (a token bucket: the burst is what lets requests through at once)
    before = _last_pk()

    statuses = [operator_client.post("/api/workers/wkr-nope/start").status_code for _ in range(4)]

    assert statuses == [404, 404, 429, 429]
    assert [e.metadata["status"] for e in _new_events(before)] == [404, 404]


@pytest.mark.django_db(transaction=True)
def test_a_call_that_journalled_its_own_failure_gets_no_second_event(operator_client):
    # worker import: EC2 (the simulator) does not know the instance; the service journals worker.ec2_failed
    # in a committed transaction of its own and answers 422.
    before = _last_pk()

    response = operator_client.post("/api/workers", {"aws_instance_id": "i-0abc123def456789",
                                                     "aws_region": "us-west-2"}, format="json")

    assert response.status_code == 422
    events = _new_events(before)
    assert [(e.event_type, e.success) for e in events] == [("worker.ec2_failed", False)]
    assert events[0].trace_id == response["X-Trace-Id"]


def _anonymous_refusals(method: str, status: int) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("labmanager_api_anonymous_refusals_total",
                                     {"method": method, "status": str(status)}) or 0.0


def test_an_anonymous_refused_change_is_counted_not_journalled(anon_client, client):
    """Anyone on SESSION_ANONYMOUS_NETWORKS can send refused calls in a loop: a metric, not the journal."""
    before, counted = _last_pk(), _anonymous_refusals("DELETE", 404)

    for _ in range(3):
        response = anon_client.delete(f"/api/remote-lab/session/{uuid.uuid4()}", REMOTE_ADDR="127.0.0.1")
        assert response.status_code == 404

    assert _new_events(before) == []
    assert _anonymous_refusals("DELETE", 404) == counted + 3
    scraped = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert f'labmanager_api_anonymous_refusals_total{{method="DELETE",status="404"}} {counted + 3}' in scraped
    assert "remote-lab" not in "".join(line for line in scraped.splitlines()
                                       if line.startswith("labmanager_api_anonymous_refusals"))  # no path label


def test_an_authenticated_refused_remote_lab_call_is_still_journalled(instructor_client, instructor_user):
    before, counted = _last_pk(), _anonymous_refusals("DELETE", 404)

    assert instructor_client.delete(f"/api/remote-lab/session/{uuid.uuid4()}").status_code == 404

    [event] = _new_events(before)
    assert (event.event_type, event.user_id, event.metadata["status"]) == (REFUSED_EVENT, instructor_user.username, 404)
    assert _anonymous_refusals("DELETE", 404) == counted
