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
    assert body["checks"]["channel_layer"] == "down: unavailable"
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


LEAKY = 'connection to server at "db-7.internal" (10.0.3.7), port 5432 failed: password authentication failed for user "lm_prod"'


def test_ready_answers_a_generic_reason_and_logs_the_error(monkeypatch, caplog):
    from django.db import OperationalError

    def database_down():
        raise OperationalError(LEAKY)

    def channel_layer_slow():
        raise TimeoutError("no answer from redis-3.internal:6379 in 5 s")

    # The driver's message names hosts, addresses and users: what an outage really says, which no real
    # database can be made to say for one request inside a test.
    monkeypatch.setitem(api_views.READINESS_CHECKS, "database", database_down)
    monkeypatch.setitem(api_views.READINESS_CHECKS, "channel_layer", channel_layer_slow)

    with caplog.at_level("WARNING", logger="apps.api.views"):
        response = APIClient().get("/api/diagnostics/ready")

    assert response.status_code == 503
    text = response.content.decode()
    for secret in ("db-7.internal", "10.0.3.7", "lm_prod", "password", "redis-3.internal", "6379"):
        assert secret not in text
    body = response.json()
    assert body["checks"]["database"] == "down: unavailable"
    assert body["checks"]["channel_layer"] == "down: timed out"
    assert body["detail"] == "Not ready: database, channel_layer down."
    logged = caplog.text
    assert "db-7.internal" in logged and "lm_prod" in logged and "redis-3.internal" in logged


def test_ready_with_a_real_unreachable_cache_does_not_tell_where_it_is(settings, caplog):
    settings.CACHES = {**settings.CACHES, "default": {  # a real Redis client against a closed port
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}

    with caplog.at_level("WARNING", logger="apps.api.views"):
        response = APIClient().get("/api/diagnostics/ready")

    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == "down: unavailable"
    assert "127.0.0.1:1" not in response.content.decode()
    assert "127.0.0.1:1" in caplog.text  # the operator finds the cause in the log
