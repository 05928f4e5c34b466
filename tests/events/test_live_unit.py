"""Event naming, filters, and what instructors may see (in-process, through the WebSocket consumer)."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.utils import timezone

from apps.events import live_stats
from apps.events.access import Filters
from apps.events.consumers import EventsConsumer
from apps.events.hub import head_sequence
from apps.events.payload import LiveEvent, cloudevent_type, named_event
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from tests.conftest import client_for
from tests.factories import LabletInstanceFactory


def _event(event_type, resource_type, resource_id="r1", metadata=None, sequence=1):
    return LiveEvent({"sequence_num": sequence, "timestamp": timezone.now(), "event_type": event_type,
                      "actor": "system", "resource_type": resource_type, "resource_id": resource_id,
                      "action": event_type, "success": True, "error": "", "metadata": metadata or {}})


def test_names_and_cloudevent_types():
    assert cloudevent_type("lablet_instance.scheduled") == "io.lablet.instance.scheduled"
    assert cloudevent_type("worker.running") == "io.lablet.worker.running"
    assert cloudevent_type("session.activated") == "io.lablet.session.activated"
    assert cloudevent_type("lablet_definition.created") == "io.lablet.definition.created"
    assert cloudevent_type("api_key.created") == "io.lablet.api_key.created"
    assert [named_event(t) for t in ("worker", "lablet_instance", "session", "api_key")] == [
        "worker_status", "lablet_instance_status", "session_status", "audit"]
    frame = _event("worker.running", "worker", "wrk-1", sequence=42).sse_frame().decode()
    assert frame.startswith("id: 42\nevent: worker_status\ndata: {") and frame.endswith("}\n\n")


def test_filters():
    running = _event("worker.running", "worker", "wrk-1")
    scheduled = _event("lablet_instance.scheduled", "lablet_instance", "i-1", {"worker_id": "wrk-2"})
    assert Filters.parse().match(running)
    assert Filters.parse(worker_ids="wrk-2").match(scheduled) and not Filters.parse(worker_ids="wrk-2").match(running)
    for spec in ("lablet_instance.scheduled", "lablet_instance.*", "lablet_instance_status", "io.lablet.instance.scheduled"):
        assert Filters.parse(event_types=spec).match(scheduled), spec
        assert not Filters.parse(event_types=spec).match(running), spec
    assert Filters.parse(event_types=["worker.running", "x"]).match(running)


@database_sync_to_async
def _write(event_type, resource_type, resource_id, metadata=None):
    with transaction.atomic():
        event = audit_record(event_type=event_type, actor="system", resource_type=resource_type,
                             resource_id=resource_id, action=event_type, metadata=metadata or {})
    return AuditEvent.objects.get(pk=event.pk).sequence_num


async def _receive_events(communicator, count, timeout=10):
    got = []
    while len(got) < count:
        message = json.loads(await communicator.receive_from(timeout=timeout))
        if message["type"] == "event":
            got.append(message)
    return got


@pytest.mark.django_db(transaction=True)
def test_instructor_sees_own_instances_and_workers_only(instructor_user, other_instructor):
    mine = LabletInstanceFactory(created_by=instructor_user)
    theirs = LabletInstanceFactory(created_by=other_instructor)
    key = client_for(instructor_user).raw_key
    start = head_sequence()

    async def scenario():
        await _write("lablet_instance.scheduled", "lablet_instance", theirs.public_id)
        await _write("lablet_instance.scheduled", "lablet_instance", mine.public_id)
        await _write("lablet_definition.created", "lablet_definition", "def-1")
        await _write("worker.running", "worker", "wrk-9")
        communicator = WebsocketCommunicator(EventsConsumer.as_asgi(), "/ws/events",
                                             subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"])
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        assert live_stats()["websocket_clients"] == 1
        await communicator.send_to(text_data=json.dumps({"type": "subscribe", "last_event_id": start}))
        replayed = await _receive_events(communicator, 2)
        await _write("lablet_instance.running", "lablet_instance", theirs.public_id)
        await _write("lablet_instance.running", "lablet_instance", mine.public_id)
        live = await _receive_events(communicator, 1)
        await communicator.send_to(text_data=json.dumps({"type": "ping"}))
        pong = json.loads(await communicator.receive_from(timeout=10))
        await communicator.disconnect()
        return replayed, live, pong

    replayed, live, pong = asyncio.run(scenario())
    assert [(m["event"], m["data"]["resource"]["id"]) for m in replayed] == [
        ("lablet_instance_status", mine.public_id), ("worker_status", "wrk-9")]
    assert live[0]["data"]["resource"]["id"] == mine.public_id
    assert live[0]["data"]["type"] == "io.lablet.instance.running"
    assert pong == {"type": "pong"}  # nothing else (their instance's event) came in between
    assert live_stats()["websocket_clients"] == 0


@pytest.mark.django_db(transaction=True)
def test_user_without_role_is_refused(django_user_model):
    from apps.identity.services import api_key_create

    nobody = django_user_model.objects.create_user("nobody", password="x")
    _, raw = api_key_create(user=nobody, actor="tests")

    async def scenario():
        communicator = WebsocketCommunicator(EventsConsumer.as_asgi(), "/ws/events",
                                             subprotocols=["labmanager.v1", f"labmanager.bearer.{raw}"])
        connected, _ = await communicator.connect(timeout=10)
        await communicator.wait()
        return connected

    assert asyncio.run(scenario()) is False


def test_the_keep_alive_period_defaults_to_15_seconds():
    from apps.events.stream import keepalive_seconds

    assert keepalive_seconds() == 15.0


def test_the_openapi_document_describes_the_event_stream(client):
    schema = client.get("/api/openapi.json").json()

    stream = schema["paths"]["/api/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {"worker_ids", "event_types", "Last-Event-ID"} <= {p["name"] for p in stream["parameters"]}
    assert {"401", "403"} <= set(stream["responses"])
