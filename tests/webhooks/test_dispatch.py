"""Dispatch: the cursor, the catch-up safety net (exactly once), and event type filters."""

import json

import pytest
from django.utils import timezone

from apps.webhooks.events import cloudevent_type, matches
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhook_subscription_update, webhooks_catch_up, webhooks_dispatch_events
from tests.webhooks.conftest import journal, subscribe

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("event_type, expected", [
    ("lablet_instance.created", "io.lablet.instance.created"),
    ("lablet_instance.graded", "io.lablet.instance.graded"),
    ("worker.running", "io.lablet.worker.running"),
    ("session.promoted", "io.lablet.session.promoted"),
    ("lablet_definition.synced", "io.lablet.definition.synced"),
    ("webhook.disabled", "io.lablet.webhook.disabled"),
])
def test_journal_types_map_to_io_lablet_types(event_type, expected):
    assert cloudevent_type(event_type) == expected


def test_patterns_match_types():
    assert matches([], "io.lablet.worker.running")
    assert matches(["io.lablet.instance.*"], "io.lablet.instance.running")
    assert not matches(["io.lablet.instance.*"], "io.lablet.worker.running")
    assert matches(["io.lablet.worker.stopped", "io.lablet.session.*"], "io.lablet.session.promoted")


def test_catch_up_enqueues_missed_events_exactly_once(receiver, queue, django_capture_on_commit_callbacks):
    sub = subscribe(receiver.url)
    events = [journal(resource_id=f"inst-{n}") for n in range(5)]  # committed; the after-commit hook never ran

    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up() == {"created": 5, "reenqueued": 0}
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up() == {"created": 0, "reenqueued": 0}
        assert webhooks_dispatch_events(events) == 0  # a late hook finds nothing left either

    assert queue.queue_size() == 5
    assert sorted(WebhookDelivery.objects.values_list("sequence_num", flat=True)) == [e.sequence_num for e in events]
    sub.refresh_from_db()
    assert sub.last_sequence_num == events[-1].sequence_num


def test_the_hook_and_catch_up_together_enqueue_once(receiver, queue, django_capture_on_commit_callbacks):
    subscribe(receiver.url)
    first = journal(resource_id="inst-1")
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_dispatch_events([first]) == 1
    second = journal(resource_id="inst-2")
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up()["created"] == 1
        assert webhooks_dispatch_events([first, second]) == 0
    assert queue.queue_size() == 2


def test_a_lost_task_is_enqueued_again_after_the_grace_period(receiver, queue, django_capture_on_commit_callbacks):
    subscribe(receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch_events([journal()])
    queue.purge_queue()  # the process died before the task was taken
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up()["reenqueued"] == 0  # its own task may still come
    WebhookDelivery.objects.update(created_at=timezone.now() - timezone.timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks_catch_up()["reenqueued"] == 1
    assert queue.queue_size() == 1


def test_event_type_filters_select_what_a_subscription_receives(receiver, django_capture_on_commit_callbacks):
    instances = subscribe(receiver.url, event_types=["io.lablet.instance.*"])
    workers = subscribe(receiver.url, event_types=["io.lablet.worker.stopped"])
    everything = subscribe(receiver.url)
    events = [journal("lablet_instance.running"), journal("worker.stopped", "worker-1"),
              journal("worker.running", "worker-1"), journal("session.promoted", "sess-1"),
              journal("lablet_instance.graded", success=False)]  # a refusal is not sent

    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch_events(events)

    def types(sub):
        return list(WebhookDelivery.objects.filter(subscription=sub).order_by("sequence_num").values_list("event_type", flat=True))

    assert types(instances) == ["io.lablet.instance.running"]
    assert types(workers) == ["io.lablet.worker.stopped"]
    assert types(everything) == ["io.lablet.instance.running", "io.lablet.worker.stopped", "io.lablet.worker.running",
                                 "io.lablet.session.promoted"]
    payload = json.loads(WebhookDelivery.objects.filter(subscription=everything).last().payload)
    assert payload["data"]["session_id"] == "sess-1"


def test_re_enabling_starts_from_the_journal_head(receiver, django_capture_on_commit_callbacks):
    sub = subscribe(receiver.url)
    sub = webhook_subscription_update(subscription=sub, actor="tests", active=False)
    journal(resource_id="while-disabled")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_catch_up()
    sub = webhook_subscription_update(subscription=sub, actor="tests", active=True)
    journal(resource_id="after")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_catch_up()
    assert [json.loads(p)["data"]["resource_id"] for p in WebhookDelivery.objects.values_list("payload", flat=True)
            if json.loads(p)["type"].startswith("io.lablet.lablet_instance") or "instance" in json.loads(p)["type"]] == ["after"]
