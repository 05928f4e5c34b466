"""Deliveries to a real loopback receiver: signature, retries, the log, disabling."""

import json

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt
from apps.webhooks.services import webhooks_catch_up, webhooks_dispatch_events
from apps.webhooks.tasks import webhook_deliver
from tests.webhooks.conftest import SECRET, documented_verifier, journal, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscription(receiver):
    return subscribe(receiver.url)


def _dispatch(events, capture):
    with capture(execute=True):
        return webhooks_dispatch_events(events)


def _run_due():
    """What the q cluster would do with the enqueued tasks."""
    return [webhook_deliver(pk) for pk in WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True)]


def _make_due(delivery):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_it_delivers_a_signed_cloudevent_the_documented_snippet_verifies(
        subscription, receiver, queue, django_capture_on_commit_callbacks):
    event = journal("lablet_instance.running", "inst-abc", worker_id="worker-1")

    assert _dispatch([event], django_capture_on_commit_callbacks) == 1
    assert queue.queue_size() == 1  # one django-q2 task per delivery
    assert _run_due() == ["delivered"]

    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers["X-Lablet-Event-Id"] == f"evt-{event.sequence_num}"
    assert headers["X-Lablet-Signature"].startswith("sha256=")
    assert documented_verifier()(SECRET, headers, body)
    assert not documented_verifier()("another-secret-0123456789", headers, body)
    assert not documented_verifier()(SECRET, headers, body + b" ")
    cloudevent = json.loads(body)
    assert cloudevent["specversion"] == "1.0"
    assert cloudevent["type"] == "io.lablet.instance.running"
    assert cloudevent["source"] == "https://labmanager.test"
    assert cloudevent["id"] == f"evt-{event.sequence_num}"
    assert cloudevent["datacontenttype"] == "application/json"
    assert cloudevent["time"].startswith(event.timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
    assert cloudevent["data"]["instance_id"] == "inst-abc"
    assert cloudevent["data"]["metadata"] == {"worker_id": "worker-1"}
    assert cloudevent["data"]["sequence_num"] == event.sequence_num
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    log = WebhookDeliveryAttempt.objects.get()
    assert (log.success, log.status_code, log.attempt, log.response_excerpt) == (True, 200, 1, "answer 200")


def test_a_stale_timestamp_fails_the_documented_check(subscription, receiver, django_capture_on_commit_callbacks):
    _dispatch([journal()], django_capture_on_commit_callbacks)
    _run_due()
    request = receiver.requests[0]
    headers = {"X-Lablet-Timestamp": str(int(request["headers"]["X-Lablet-Timestamp"]) - 3600),
               "X-Lablet-Signature": request["headers"]["X-Lablet-Signature"]}
    assert not documented_verifier()(SECRET, headers, request["body"])


def test_it_retries_a_500_with_backoff_then_succeeds(subscription, receiver, queue, django_capture_on_commit_callbacks):
    receiver.responses = [500]
    _dispatch([journal()], django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()

    before = timezone.now()
    assert webhook_deliver(delivery.pk).startswith("retry at")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    assert delivery.next_attempt_at >= before + timezone.timedelta(seconds=1)  # base 1 s
    assert webhook_deliver(delivery.pk) == "not due"  # a duplicate task before its time sends nothing
    assert len(receiver.requests) == 1

    _make_due(delivery)
    queue.purge_queue()
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up()["reenqueued"] == 1  # the schedule picks the retry up
    assert queue.queue_size() == 1
    assert webhook_deliver(delivery.pk) == "delivered"

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 2
    log = list(WebhookDeliveryAttempt.objects.order_by("attempt").values_list("attempt", "status_code", "success"))
    assert log == [(1, 500, False), (2, 200, True)]
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]  # the same event, signed anew
    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 0 and subscription.active


def test_backoff_doubles_per_attempt_and_honours_a_longer_retry_after(settings):
    from apps.webhooks.delivery import backoff_seconds

    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff_seconds(1, "90") == 90
    assert backoff_seconds(20) == 3600


def test_a_429_is_retried_but_other_4xx_are_not(subscription, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [429, 404]
    _dispatch([journal()], django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()

    assert webhook_deliver(delivery.pk).startswith("retry at")
    _make_due(delivery)
    assert webhook_deliver(delivery.pk) == "failed"

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 2
    log = WebhookDeliveryAttempt.objects.order_by("attempt").values_list("status_code", "next_attempt_at")
    assert [(code, retry is not None) for code, retry in log] == [(429, True), (404, False)]
    _make_due(delivery)
    assert webhook_deliver(delivery.pk) == "not due"
    assert len(receiver.requests) == 2


def test_a_network_error_is_retried_up_to_the_attempt_limit(settings, django_capture_on_commit_callbacks):
    from tests.webhooks.conftest import Receiver

    dead = Receiver()
    url = dead.url
    dead.server.server_close()  # nobody listens there any more: connection refused
    sub = subscribe(url)
    _dispatch([journal()], django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()

    outcomes = []
    for _ in range(settings.WEBHOOK_MAX_ATTEMPTS):
        outcomes.append(webhook_deliver(delivery.pk))
        _make_due(delivery)
    assert outcomes[:-1] == [o for o in outcomes[:-1] if o.startswith("retry at")]
    assert outcomes[-1] == "failed"
    assert WebhookDeliveryAttempt.objects.filter(subscription=sub, success=False, status_code=None).count() == 3
    assert "ConnectError" in WebhookDeliveryAttempt.objects.first().error


def test_it_disables_the_subscription_after_repeated_failures(
        subscription, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [410, 410]  # not retried: each delivery fails at once
    _dispatch([journal(resource_id="inst-1"), journal(resource_id="inst-2"), journal(resource_id="inst-3")],
              django_capture_on_commit_callbacks)
    first, second, third = WebhookDelivery.objects.order_by("sequence_num")

    assert webhook_deliver(first.pk) == "failed"
    subscription.refresh_from_db()
    assert subscription.active and subscription.consecutive_failures == 1
    assert webhook_deliver(second.pk) == "failed; subscription disabled"

    subscription.refresh_from_db()
    assert not subscription.active
    assert subscription.disabled_at is not None and "2 consecutive failed deliveries" in subscription.disabled_reason
    third.refresh_from_db()
    assert third.status == DeliveryStatus.SKIPPED
    assert webhook_deliver(third.pk) == "not due"
    assert len(receiver.requests) == 2
    disabled = AuditEvent.objects.get(event_type="webhook.disabled")
    assert disabled.resource_id == subscription.public_id and disabled.actor == "system"
    # a disabled subscription gets nothing new
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_dispatch_events([journal()]) == 0


def test_a_success_resets_the_failure_streak(subscription, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [400, 200, 400]
    _dispatch([journal(resource_id=f"inst-{n}") for n in range(3)], django_capture_on_commit_callbacks)
    assert _run_due() == ["failed", "delivered", "failed"]
    subscription.refresh_from_db()
    assert subscription.active and subscription.consecutive_failures == 1


def test_redirects_are_not_followed(subscription, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [302]
    _dispatch([journal()], django_capture_on_commit_callbacks)
    assert _run_due() == ["failed"]
    assert "redirects are not followed" in WebhookDeliveryAttempt.objects.get().error


def test_end_to_end_with_the_q_cluster_in_sync_mode(subscription, receiver, monkeypatch,
                                                    django_capture_on_commit_callbacks):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    event = journal("worker.stopped", "worker-9")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_catch_up()  # the safety net alone delivers it (no hook was called)
    [request] = receiver.requests
    assert json.loads(request["body"])["type"] == "io.lablet.worker.stopped"
    assert json.loads(request["body"])["data"]["worker_id"] == "worker-9"
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED
    assert request["headers"]["X-Lablet-Event-Id"] == f"evt-{event.sequence_num}"
