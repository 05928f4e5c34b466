"""Every error under /api is RFC 7807 problem+json with a trace_id that matches the X-Trace-Id header, and a
stable machine-readable `code` (apps.core.errors.CODES, docs/api.md#error-codes)."""

import logging

import pytest
from django.conf import settings as django_settings
from django.test import Client
from rest_framework.test import APIClient

from apps.workers import selectors as worker_selectors
from apps.workers.services import worker_transition
from apps.core.errors import CODES
from apps.core.middleware import TraceIdLogFilter
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "trace_id"}



def assert_problem(response, status: int, path: str, code: str = "") -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_FIELDS <= set(body), body
    assert body["status"] == status
    assert body["instance"] == path
    assert body["title"] and body["detail"] and body["type"]
    assert body["trace_id"] and body["trace_id"] != "-"
    assert response["X-Trace-Id"] == body["trace_id"]
    assert body["code"] in CODES, body
    if code:
        assert body["code"] == code, body
    return body


def test_a_malformed_json_body_is_a_400_problem(admin_client):
    response = admin_client.post("/api/workers", data='{"name": ', content_type="application/json")

    body = assert_problem(response, 400, "/api/workers", "malformed_request")
    assert "JSON" in body["detail"]


def test_an_unauthenticated_request_is_a_401_problem_with_a_challenge(anon_client):
    response = anon_client.get("/api/lablet-definitions")

    assert_problem(response, 401, "/api/lablet-definitions", "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_role_without_the_right_is_a_403_problem(instructor_client):
    response = instructor_client.post("/api/workers", {"name": "not-mine-to-make"}, format="json")

    assert_problem(response, 403, "/api/workers", "permission_denied")


def test_an_unknown_instance_is_a_404_problem_naming_the_resource(admin_client):
    response = admin_client.get("/api/lablet-instances/inst-0000000000000000")

    assert_problem(response, 404, "/api/lablet-instances/inst-0000000000000000", "lablet_instance_not_found")


def test_an_unknown_object_is_a_404_problem(admin_client):
    response = admin_client.get("/api/workers/worker-0000000000000000")

    assert_problem(response, 404, "/api/workers/worker-0000000000000000", "worker_not_found")


@pytest.mark.parametrize("path", ["/api/nope", "/api/workers/", "/api/lablet-instances/inst-1/nope"])
def test_an_unknown_api_path_is_a_404_problem_not_an_html_page(admin_client, path):
    response = admin_client.get(path)

    body = assert_problem(response, 404, path, "not_found")
    assert "<html" not in response.content.decode().lower()
    assert path in body["detail"]


def test_patch_on_a_definition_is_a_405_problem(admin_client):
    definition = LabletDefinitionFactory()
    path = f"/api/lablet-definitions/{definition.public_id}"

    response = admin_client.patch(path, {"description": "x"}, format="json")

    assert_problem(response, 405, path, "method_not_allowed")


def test_delete_on_the_instance_collection_is_a_405_problem(admin_client):
    response = admin_client.delete("/api/lablet-instances")

    assert_problem(response, 405, "/api/lablet-instances", "method_not_allowed")


def test_an_invalid_transition_is_a_409_problem(operator_client):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    path = f"/api/workers/{worker.public_id}/start"

    response = operator_client.post(path)

    body = assert_problem(response, 409, path, "invalid_transition")
    assert "running" in body["detail"]


def test_deleting_a_definition_in_use_is_a_409_problem(admin_client):
    instance = instance_in("running")
    path = f"/api/lablet-definitions/{instance.definition.public_id}"

    response = admin_client.delete(path)

    assert_problem(response, 409, path, "conflict")


def test_a_body_that_is_not_json_is_a_415_problem(admin_client):
    response = admin_client.post("/api/workers", data="name=plain", content_type="text/plain")

    body = assert_problem(response, 415, "/api/workers", "unsupported_media_type")
    assert "text/plain" in body["detail"]


def test_a_body_failing_validation_is_a_422_problem_listing_the_fields(instructor_client):
    response = instructor_client.post(
        "/api/lablet-definitions",
        {"name": "lab", "resource_requirements": {"cpu_cores": 0, "memory_gb": 4, "storage_gb": 10, "node_count": 1}},
        format="json",
    )

    body = assert_problem(response, 422, "/api/lablet-definitions", "validation_failed")
    assert {"version", "cml_lab_yaml", "resource_requirements.cpu_cores"} <= set(body["errors"])
    assert "name" not in body["errors"]
    assert all(isinstance(messages, list) and messages for messages in body["errors"].values())


def test_a_bad_list_parameter_is_a_422_problem(admin_client):
    response = admin_client.get("/api/workers?limit=0&sort=colour")

    body = assert_problem(response, 422, "/api/workers", "validation_failed")
    assert {"limit", "sort"} <= set(body["errors"])


def test_going_over_the_rate_limit_is_a_429_problem_with_retry_after(settings, admin_client):
    settings.API_RATE_LIMIT = "3/min"

    statuses = [admin_client.get("/api/workers").status_code for _ in range(3)]
    response = admin_client.get("/api/workers")

    assert statuses == [200, 200, 200]
    assert_problem(response, 429, "/api/workers", "rate_limited")
    assert 0 < int(response["Retry-After"]) <= 61


def test_an_unexpected_error_is_a_500_problem_without_internals(monkeypatch, admin_user):
    def broken(**kwargs):
        raise RuntimeError("secret-internal-detail in worker_list")

    # The only way to make a healthy view crash on demand: break the selector the view calls.
    monkeypatch.setattr(worker_selectors, "worker_list", broken)
    client = APIClient(raise_request_exception=False)
    client.force_login(admin_user)

    response = client.get("/api/workers")

    body = assert_problem(response, 500, "/api/workers", "internal_error")
    text = response.content.decode()
    assert "Traceback" not in text
    assert "secret-internal-detail" not in text
    assert "RuntimeError" not in text
    assert "trace_id" in body["detail"]


def test_the_request_log_line_carries_the_trace_id(caplog, admin_client):
    # The project attaches trace_id through a logging filter; give caplog's handler the same filter.
    caplog.handler.addFilter(TraceIdLogFilter())
    with caplog.at_level(logging.INFO, logger="labmanager.request"):
        response = admin_client.get("/api/nope")

    records = [r for r in caplog.records if r.name == "labmanager.request"]
    assert len(records) == 1
    trace_id = response["X-Trace-Id"]
    assert records[0].trace_id == trace_id == response.json()["trace_id"]
    line = logging.Formatter(django_settings.LOGGING["formatters"]["plain"]["format"]).format(records[0])
    assert f"[trace_id={trace_id}]" in line
    assert "GET /api/nope 404" in line


def test_each_request_gets_its_own_trace_id(admin_client):
    first = admin_client.get("/api/nope")
    second = admin_client.get("/api/nope")

    assert first["X-Trace-Id"] != second["X-Trace-Id"]


def test_a_404_outside_the_api_stays_an_html_page():
    response = Client().get("/no-such-page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert not response["Content-Type"].startswith("application/problem+json")
