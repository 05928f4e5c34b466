"""Liveness and readiness: /api/diagnostics/health and /api/diagnostics/ready."""

import pytest
from rest_framework.test import APIClient

from apps.api import views as api_views

pytestmark = pytest.mark.django_db

CHECKS = {"database", "cache", "channel_layer", "q_broker"}


def test_health_answers_without_authentication():
    response = APIClient().get("/api/diagnostics/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


def test_ready_reports_every_dependency_ok():
    response = APIClient().get("/api/diagnostics/ready")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {name: "ok" for name in CHECKS}


def test_ready_is_a_503_problem_naming_the_dependency_that_is_down(monkeypatch):
    def channel_layer_down():
        raise ConnectionError("connection refused")

    # Simulates an outage that no real part can produce on demand inside a test: the real
    # channel layer (in-memory or Redis) cannot be made to fail for one request only.
    monkeypatch.setitem(api_views.READINESS_CHECKS, "channel_layer", channel_layer_down)

    response = APIClient().get("/api/diagnostics/ready")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 503
    assert "channel_layer" in body["detail"]
    assert body["checks"]["channel_layer"].startswith("down")
    assert "connection refused" in body["checks"]["channel_layer"]
    assert {body["checks"][name] for name in CHECKS - {"channel_layer"}} == {"ok"}
    assert response["X-Trace-Id"] == body["trace_id"]


def test_ready_names_every_failing_dependency_not_just_the_first(monkeypatch):
    def down():
        raise RuntimeError("unreachable")

    # Same simulated outage, on two dependencies at once.
    monkeypatch.setitem(api_views.READINESS_CHECKS, "cache", down)
    monkeypatch.setitem(api_views.READINESS_CHECKS, "q_broker", down)

    body = APIClient().get("/api/diagnostics/ready").json()

    assert "cache" in body["detail"] and "q_broker" in body["detail"]
    assert body["checks"]["database"] == "ok"
