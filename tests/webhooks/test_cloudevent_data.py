"""The CloudEvent `data` of every instance event carries the seed's `instance_id`, `worker_id` and
`cml_lab_id` at its top level (null while unknown), the richer fields beside them; delivered to a real
loopback receiver. The live stream's copy: tests/events/test_daphne.py."""

import json

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import audit_seal
from apps.webhooks.models import WebhookDelivery
from apps.webhooks.services import webhooks_dispatch_events
from apps.webhooks.tasks import webhook_deliver
from tests.factories import walk_an_instance_through_its_life
from tests.webhooks.conftest import subscribe

pytestmark = pytest.mark.django_db

# Every event type the walk emits, each a type of the seed's table or one of ours beside them.
LIFE = ["created", "scheduled", "instantiating", "lab_imported", "progressed", "running", "extended",
        "collecting", "grading", "graded", "stopping", "stopped", "archived", "terminated"]


def expected_ids(events: list[dict], instance, worker, lab_id) -> list[dict]:
    """What each event's ids must be: the worker from the placement on, the lab from its import on."""
    placed = lab = False
    expected = []
    for event in events:
        placed = placed or event["type"] == "io.lablet.instance.scheduled"
        lab = lab or event["type"] == "io.lablet.instance.lab_imported"
        expected.append({"instance_id": instance.public_id, "worker_id": worker.public_id if placed else None,
                         "cml_lab_id": lab_id if lab else None})
    return expected


def test_every_instance_cloudevent_carries_instance_worker_and_lab_ids_at_the_top_of_its_data(
        receiver, queue, django_capture_on_commit_callbacks):
    subscribe(receiver.url, event_types=["io.lablet.instance.*"])
    instance, worker, lab_id = walk_an_instance_through_its_life()
    audit_seal()
    events = list(AuditEvent.objects.filter(resource_type="lablet_instance").order_by("sequence_num"))
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch_events(events)
    for pk in WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True):
        assert webhook_deliver(pk) == "delivered"

    delivered = sorted((json.loads(r["body"]) for r in receiver.requests), key=lambda ce: ce["data"]["sequence_num"])
    assert [ce["type"] for ce in delivered] == [f"io.lablet.instance.{verb}" for verb in LIFE]
    ids = [{key: ce["data"][key] for key in ("instance_id", "worker_id", "cml_lab_id")} for ce in delivered]
    assert ids == expected_ids(delivered, instance, worker, lab_id)
    for ce in delivered:  # the richer fields stay beside them
        assert list(ce["data"])[:3] == ["instance_id", "worker_id", "cml_lab_id"]
        assert {"resource_type", "resource_id", "action", "actor", "event_type", "sequence_num", "event_hash",
                "metadata"} <= set(ce["data"])
        assert ce["subject"] == instance.public_id and ce["data"]["resource_id"] == instance.public_id
