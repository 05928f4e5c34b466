"""GET /api/audit/events, POST /api/audit/verify, GET /api/audit/chain-root."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_seal
from tests.audit.conftest import TABLE, record, sql

pytestmark = pytest.mark.django_db


def _events(client, query=""):
    response = client.get(f"/api/audit/events{query}")
    assert response.status_code == 200, response.content
    return response


def test_the_list_is_an_envelope_newest_first(chain, admin_client):
    audit_seal()  # the admin's key creation
    response = _events(admin_client, "?limit=3")
    body = response.json()

    total = AuditEvent.objects.count()
    assert set(body) == {"events", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (total, 3, 0)
    assert response["X-Total-Count"] == str(total)
    assert 'rel="next"' in response["Link"]
    assert [e["sequence_num"] for e in body["events"]] == [total, total - 1, total - 2]
    event = body["events"][-1]
    stored = AuditEvent.objects.get(sequence_num=total - 2)
    assert event["resource"] == f"{stored.resource_type}:{stored.resource_id}"
    assert event["event_hash"] == stored.event_hash and event["prev_hash"] == stored.prev_hash
    assert {"timestamp", "event_type", "actor", "user_id", "action", "success", "ip_address", "error",
            "metadata"} <= set(event)


def test_limit_and_offset_page_through_in_sequence_order(chain, admin_client):
    pages = [_events(admin_client, f"?order=asc&limit=4&offset={offset}").json()["events"] for offset in (0, 4, 8)]

    numbers = [e["sequence_num"] for page in pages for e in page]
    assert numbers[:10] == list(range(1, 11))


def test_filters_by_event_type_user_resource_and_time(db, admin_client):
    record(3, event_type="worker.drained", resource_type="worker", actor="op1 (apikey:lm_k1)")
    record(2, event_type="worker.undrained", resource_type="worker", actor="op2")
    record(1, event_type="lablet_instance.created", resource_type="lablet_instance", resource_id="li-7", actor="inst")
    audit_seal()

    def numbers(query):
        return [e["sequence_num"] for e in _events(admin_client, query).json()["events"]]

    assert len(numbers("?event_type=worker.drained")) == 3
    assert len(numbers("?event_type=worker.drained,worker.undrained")) == 5
    assert len(numbers("?user_id=op1")) == 3
    assert len(numbers("?user_id=op2")) == 2
    assert len(numbers("?resource=lablet_instance:li-7")) == 1
    assert len(numbers("?resource=worker")) == 5
    assert len(numbers("?resource=worker:t-1")) == 2
    now = timezone.now()
    assert len(numbers(f"?from={(now - timedelta(minutes=5)).isoformat().replace('+', '%2B')}")) >= 6
    assert numbers(f"?to={(now - timedelta(minutes=5)).isoformat().replace('+', '%2B')}") == []
    assert numbers(f"?from={(now + timedelta(minutes=5)).isoformat().replace('+', '%2B')}") == []


@pytest.mark.parametrize("query", ["?from=yesterday", "?to=2026-13-01", "?limit=0", "?limit=5000", "?sort=actor",
                                   "?offset=-1"])
def test_bad_parameters_are_422_problems(admin_client, query):
    response = admin_client.get(f"/api/audit/events{query}")

    assert response.status_code == 422
    assert response["Content-Type"].startswith("application/problem+json")


def test_unsealed_events_are_not_listed(db, admin_client):
    with transaction.atomic():
        audit_record(event_type="thing.made", actor="x", resource_type="thing", resource_id="t", action="a")

    assert _events(admin_client, "?event_type=thing.made").json()["total"] == 0
    audit_seal()
    assert _events(admin_client, "?event_type=thing.made").json()["total"] == 1


def test_the_list_runs_the_same_queries_for_few_and_many_events(db, admin_client):
    record(3)
    audit_seal()
    admin_client.get("/api/audit/events")  # warm-up (the key's last_used_at)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert len(_events(admin_client, "?limit=200").json()["events"]) == AuditEvent.objects.count()
        return len(captured.captured_queries)

    few = queries()
    record(150)
    audit_seal()
    assert queries() == few


def test_verify_answers_the_seed_fields_and_journals_the_check(chain, operator_client, operator_user):
    response = operator_client.post("/api/audit/verify")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is True
    assert body["first_tampered"] is None
    assert body["total_events"] == AuditEvent.objects.count() - 1  # all but the check's own event
    head = AuditEvent.objects.get(sequence_num=body["total_events"])
    assert body["chain_root_hash"] == head.event_hash
    assert body["verified_at"]
    check = AuditEvent.objects.filter(event_type="audit.verified").get()
    assert check.user_id == operator_user.username and check.success
    assert check.metadata["chain_root_hash"] == head.event_hash


def test_verify_reports_tampering(chain, admin_client):
    audit_seal()
    sql(f"DELETE FROM {TABLE} WHERE sequence_num = 4")

    body = admin_client.post("/api/audit/verify").json()

    assert (body["valid"], body["first_tampered"]) == (False, 4)
    assert "missing" in body["reason"]
    check = AuditEvent.objects.filter(event_type="audit.verified").get()
    assert not check.success and check.metadata["first_tampered"] == 4


def test_the_chain_root_is_the_last_event(chain, admin_client):
    audit_seal()
    head = AuditEvent.objects.order_by("-sequence_num").first()

    body = admin_client.get("/api/audit/chain-root").json()

    assert body["root_hash"] == head.event_hash
    assert body["total_events"] == head.sequence_num == AuditEvent.objects.count()
    assert body["timestamp"].startswith(head.timestamp.isoformat()[:19])


@pytest.mark.parametrize("method, path", [("get", "/api/audit/events"), ("post", "/api/audit/verify"),
                                          ("get", "/api/audit/chain-root")])
def test_instructors_and_anonymous_callers_are_refused(instructor_client, anon_client, method, path):
    before = AuditEvent.objects.count()

    assert getattr(instructor_client, method)(path).status_code == 403
    assert getattr(anon_client, method)(path).status_code == 401
    refused = AuditEvent.objects.filter(event_type="api_call.refused").count()
    assert (AuditEvent.objects.count() - before, refused) == ((1, 1) if method == "post" else (0, 0))
    assert not AuditEvent.objects.filter(event_type="audit.verified").exists()


def test_the_schema_documents_the_audit_endpoints(client):
    schema = client.get("/api/openapi.json").json()

    listed = schema["paths"]["/api/audit/events"]["get"]
    assert {"from", "to", "event_type", "user_id", "resource", "limit", "offset"} <= {p["name"] for p in listed["parameters"]}
    envelope = listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"events", "total", "limit", "offset"} <= set(schema["components"]["schemas"][envelope]["required"])
    verify = schema["paths"]["/api/audit/verify"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    verification = schema["components"]["schemas"][verify["$ref"].rsplit("/", 1)[1]]
    assert {"valid", "total_events", "first_tampered", "chain_root_hash", "verified_at"} <= set(verification["properties"])
    assert "/api/audit/chain-root" in schema["paths"]
