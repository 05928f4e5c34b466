"""Who may do what: every API endpoint walked with every role, and how API keys and sessions authenticate."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.workers.services import worker_drain, worker_template_create, worker_transition
from labmanager.models import ApiKey
from labmanager.services import api_key_create, api_key_revoke
from tests.factories import TOPOLOGY, LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


ANON, ADMIN, OPERATOR, INSTRUCTOR, OTHER = "anonymous", "admin", "operator", "instructor", "instructor-not-owner"
ROLES = (ANON, ADMIN, OPERATOR, INSTRUCTOR, OTHER)
CLIENT_FIXTURES = {
    ANON: "anon_client",
    ADMIN: "admin_client",
    OPERATOR: "operator_client",
    INSTRUCTOR: "instructor_client",
    OTHER: "other_instructor_client",
}


def _worker(state):
    def make(owner):
        worker = WorkerFactory()
        return worker_transition(worker=worker, to=state, actor="tests")

    return make


def _drained_worker(owner):
    return worker_drain(worker=_worker("running")(owner), actor="tests")


def _template(owner):
    return worker_template_create(actor="tests", data={"name": "tpl", "instance_type": "m5zn.metal", "cpu_cores": 48,
                                                      "memory_gb": 192, "storage_gb": 500, "max_nodes": 100})


def _definition(owner):
    return LabletDefinitionFactory(created_by=owner)


def _instance(state):
    # Every instance belongs to `instructor` (the owner); `instructor-not-owner` is another instructor.
    return lambda owner: instance_in(state, created_by=owner)


def _webhook(owner):
    from apps.audit.webhooks.services import webhook_subscription_create

    return webhook_subscription_create(actor="tests", url="https://93.184.216.34/hook")  # a public IP literal: no DNS


def _new_worker(obj):
    return {"name": "cml-worker-new"}


def _new_definition(obj):
    return {
        "name": "new-lab",
        "version": "1.0.0",
        "cml_lab_yaml": TOPOLOGY,
        "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10, "node_count": 2},
    }


def _new_instance(definition):
    start = timezone.now() + timedelta(hours=1)
    return {"definition_id": definition.public_id, "owner_id": "student-new", "timeslot_start": start.isoformat()}


def _new_roster(definition):
    return {**_new_instance(definition), "owner_ids": ["student-a", "student-b"]}


def _preview(definition):
    start = timezone.now() + timedelta(hours=1)
    return {"definition_id": definition.public_id, "timeslot_start": start.isoformat(), "count": 2}


# POSTs that only read (a dry run): allowed, they still write nothing.
READ_ONLY_POSTS = {"/api/scheduler/preview"}


# (method, path, object the request acts on, body, expected status per authenticated role).
# Anonymous is always 401. Objects are created fresh for every cell, in the state the verb needs.
ENDPOINTS = [
    ("GET", "/api/workers", None, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("POST", "/api/workers", None, _new_worker, {ADMIN: 201, OPERATOR: 201, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/workers/{id}", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("DELETE", "/api/workers/{id}", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/start", _worker("stopped"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/stop", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("PATCH", "/api/workers/{id}", _worker("running"), lambda obj: {"capacity": {"max_nodes": 50}},
     {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/drain", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/undrain", _drained_worker, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/sync", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/workers/{id}/license", _worker("running"), lambda obj: {"token": "tok", "reregister": True},
     {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("DELETE", "/api/workers/{id}/license", _worker("running"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/worker-templates", None, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/worker-templates", None, lambda obj: {"name": "tpl-new", "instance_type": "m5zn.metal",
                                                         "cpu_cores": 48, "memory_gb": 192, "storage_gb": 500,
                                                         "max_nodes": 100},
     {ADMIN: 201, OPERATOR: 201, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/worker-templates/{id}", _template, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("PUT", "/api/worker-templates/{id}", _template, lambda obj: {"cost_per_hour": "4.5"},
     {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/lablet-definitions", None, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("POST", "/api/lablet-definitions", None, _new_definition, {ADMIN: 201, OPERATOR: 403, INSTRUCTOR: 201, OTHER: 201}),
    ("GET", "/api/lablet-definitions/{id}", _definition, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("PUT", "/api/lablet-definitions/{id}", _definition, lambda obj: {"description": "updated"},
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 200}),
    ("DELETE", "/api/lablet-definitions/{id}", _definition, None, {ADMIN: 204, OPERATOR: 403, INSTRUCTOR: 204, OTHER: 204}),
    # Sync needs the CML client, not built yet: allowed roles get 501 problem+json.
    ("POST", "/api/lablet-definitions/{id}/sync", _definition, None, {ADMIN: 422, OPERATOR: 403, INSTRUCTOR: 422, OTHER: 422}),
    ("GET", "/api/lablet-instances", None, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("POST", "/api/lablet-instances", _definition, _new_instance, {ADMIN: 201, OPERATOR: 403, INSTRUCTOR: 201, OTHER: 201}),
    ("GET", "/api/lablet-instances/{id}", _instance("pending"), None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/lablet-instances/{id}/start-collection", _instance("running"), None,
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/lablet-instances/{id}/start-grading", _instance("collecting"), None,
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/lablet-instances/{id}/extend", _instance("pending"), lambda obj: {"minutes": 30},
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/lablet-instances/{id}/terminate", _instance("running"), None,
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/lablet-instances/bulk", _definition, _new_roster, {ADMIN: 201, OPERATOR: 403, INSTRUCTOR: 201, OTHER: 201}),
    ("PATCH", "/api/lablet-instances/{id}/priority", _instance("pending"), lambda obj: {"priority": 8},
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 200, OTHER: 404}),
    ("POST", "/api/scheduler/preview", _definition, _preview, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("GET", "/api/scheduler/status", None, None, {ADMIN: 200, OPERATOR: 200, INSTRUCTOR: 200, OTHER: 200}),
    ("GET", "/api/webhooks", None, None, {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
    ("POST", "/api/webhooks", None, lambda obj: {"url": "https://93.184.216.34/hook"},
     {ADMIN: 201, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/webhooks/{id}", _webhook, None, {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
    ("PATCH", "/api/webhooks/{id}", _webhook, lambda obj: {"description": "changed"},
     {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
    ("DELETE", "/api/webhooks/{id}", _webhook, None, {ADMIN: 204, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
    ("GET", "/api/webhooks/{id}/deliveries", _webhook, None, {ADMIN: 200, OPERATOR: 403, INSTRUCTOR: 403, OTHER: 403}),
]

CELLS = [
    pytest.param(method, path, make, body, role, 401 if role == ANON else expected[role], id=f"{method} {path} as {role}")
    for method, path, make, body, expected in ENDPOINTS
    for role in ROLES
]


@pytest.mark.parametrize("method, path, make, body, role, status", CELLS)
def test_it_walks_every_endpoint_with_every_role(request, instructor_user, method, path, make, body, role, status):
    client = request.getfixturevalue(CLIENT_FIXTURES[role])
    obj = make(instructor_user) if make else None
    url = path.format(id=obj.public_id) if "{id}" in path else path
    payload = body(obj) if body else None
    audit_before = AuditEvent.objects.count()

    response = client.generic(method, url, json.dumps(payload) if payload is not None else "", content_type="application/json")

    assert response.status_code == status, response.content
    if status == 401:
        assert response["Content-Type"].startswith("application/problem+json")
        assert response["WWW-Authenticate"]
    if status >= 400:
        assert response.json()["status"] == status
    wrote = AuditEvent.objects.count() > audit_before
    changes = method != "GET" and path not in READ_ONLY_POSTS and status < 300
    assert wrote == changes, "a change is audited; a refusal or a read writes nothing"


def test_instructors_list_only_the_instances_they_created(
    admin_client, operator_client, instructor_client, other_instructor_client, instructor_user, other_instructor
):
    mine = instance_in("pending", created_by=instructor_user)
    theirs = instance_in("running", created_by=other_instructor)

    def ids(client):
        return {row["id"] for row in client.get("/api/lablet-instances").json()["lablet_instances"]}

    assert ids(instructor_client) == {mine.public_id}
    assert ids(other_instructor_client) == {theirs.public_id}
    assert ids(admin_client) == {mine.public_id, theirs.public_id}
    assert ids(operator_client) == {mine.public_id, theirs.public_id}


def test_a_bearer_api_key_authenticates_like_x_api_key(operator_user):
    _, raw = api_key_create(user=operator_user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert client.get("/api/workers").status_code == 200
    assert client.post("/api/workers", {"name": "via-bearer"}, format="json").status_code == 201
    assert AuditEvent.objects.filter(event_type="worker.created", actor__contains=raw[:10]).exists()


def test_a_revoked_key_is_refused(operator_user):
    api_key, raw = api_key_create(user=operator_user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    assert client.get("/api/workers").status_code == 200

    api_key_revoke(api_key=api_key, actor="tests")

    response = client.get("/api/workers")
    assert response.status_code == 401
    assert response["WWW-Authenticate"]
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert bearer.get("/api/workers").status_code == 401


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_a_wrong_key_is_refused(operator_user, header):
    _, raw = api_key_create(user=operator_user, actor="tests")
    wrong = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    client = APIClient()
    client.credentials(**{header: wrong if header == "HTTP_X_API_KEY" else f"Bearer {wrong}"})

    response = client.get("/api/workers")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")


def test_an_inactive_users_key_is_refused(operator_user, operator_client):
    assert operator_client.get("/api/workers").status_code == 200
    operator_user.is_active = False
    operator_user.save(update_fields=["is_active"])

    assert operator_client.get("/api/workers").status_code == 401


def test_only_the_sha256_of_a_key_is_stored(operator_user):
    api_key, raw = api_key_create(user=operator_user, actor="tests", name="ci")

    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert row["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert all(raw not in str(value) for value in row.values())
    audit_rows = json.dumps(list(AuditEvent.objects.values("actor", "resource_id", "metadata")), default=str)
    assert raw not in audit_rows


def test_a_session_login_reads_the_api(admin_user, instructor_user):
    forced = APIClient()
    forced.force_login(instructor_user)
    assert forced.get("/api/lablet-instances").status_code == 200

    logged_in = APIClient()
    assert logged_in.login(username=admin_user.username, password="pw-" + admin_user.username)
    assert logged_in.get("/api/workers").status_code == 200


def test_a_session_write_without_a_csrf_token_is_refused(operator_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator_user)

    response = client.post("/api/workers", {"name": "csrf-less"}, format="json")

    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/problem+json")
    assert not AuditEvent.objects.filter(event_type="worker.created").exists()
