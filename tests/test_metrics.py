"""GET /metrics: Prometheus text with django-prometheus's metrics and the domain gauges; who may scrape."""

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from apps.audit.services import audit_record, audit_seal
from apps.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookSubscription
from apps.sessions.models import SessionPool
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db


def _samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_loopback_scrapes_domain_gauges_and_django_prometheus_metrics(client):
    WorkerFactory()
    audit_record(event_type="worker.created", actor="tests", resource_type="worker", resource_id="w-1", action="x")
    audit_seal()
    sub = WebhookSubscription.objects.create(url="https://93.184.216.34/h", secret="s" * 20)
    delivery = WebhookDelivery.objects.create(subscription=sub, sequence_num=1, event_id="evt-1",
                                              event_type="io.lablet.worker.created", payload="{}")
    for attempt, ok in ((1, False), (2, False), (3, True)):
        WebhookDeliveryAttempt.objects.create(delivery=delivery, subscription=sub, event_id="evt-1",
                                              event_type="io.lablet.worker.created", attempt=attempt, success=ok)

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = _samples(response.content.decode())
    worker_status = WorkerFactory._meta.model.objects.get().status
    assert samples[("labmanager_workers", (("status", worker_status),))] == 1
    assert ("labmanager_lablet_instances", (("status", "running"),)) in samples
    assert samples[("labmanager_webhook_delivery_failures_total", ())] == 2
    assert samples[("labmanager_webhook_deliveries_pending", ())] == 1
    assert samples[("labmanager_webhook_delivery_lag_seconds", ())] >= 0
    assert samples[("labmanager_webhook_subscriptions", (("state", "active"),))] == 1
    assert samples[("labmanager_audit_chain_length", ())] >= 1
    assert any(name.startswith("django_http_requests") for name, _ in samples)  # django-prometheus


def test_session_queue_length_per_pool(client):
    SessionPool.objects.get_or_create(name="metrics-pool")
    samples = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode())
    assert samples[("labmanager_session_queue_length", (("pool", "metrics-pool"),))] == 0


def test_every_domain_gauge_is_exported_with_its_help(client):
    # The live figures are per process; tests/events/test_daphne_clients.py reads them from a running daphne
    # with clients connected. Here: the names exist, idle values.
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}

    for name in ("labmanager_workers", "labmanager_lablet_instances", "labmanager_session_queue_length",
                 "labmanager_live_sse_clients", "labmanager_live_websocket_clients", "labmanager_webhook_delivery_failures",
                 "labmanager_audit_chain_length", "labmanager_audit_unsealed_events", "labmanager_live_tail_queries"):
        assert name in families, name
        assert families[name].documentation
    samples = _samples(text)
    assert samples[("labmanager_audit_unsealed_events", ())] == 0


def test_unsealed_events_are_counted(client):
    audit_record(event_type="worker.created", actor="tests", resource_type="worker", resource_id="w-1", action="x")

    samples = _samples(client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode())

    assert samples[("labmanager_audit_unsealed_events", ())] == 1  # committed (in a real run), not chained yet


def test_remote_scrapes_need_an_admin_or_operator_key(operator_client, instructor_client):
    remote = {"REMOTE_ADDR": "198.51.100.7"}
    assert APIClient().get("/metrics", **remote).status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")
    assert bad.get("/metrics", **remote).status_code == 401
    assert instructor_client.get("/metrics", **remote).status_code == 403
    response = operator_client.get("/metrics", **remote)
    assert response.status_code == 200 and b"labmanager_workers" in response.content
