"""The journal's bulk paths: one event per row of a query, written by the database (stale reaping uses
it for 100,000 sessions), and a large seal ringing the live streams' doorbell once, not once per event."""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.db.models.functions import JSONObject

from apps.audit.models import AuditEvent
from apps.audit.publish import PUBLISH_EACH_MAX
from apps.audit.services import audit_record_many, audit_record_select, audit_seal
from apps.audit.verify import chain_verify
from tests.audit.conftest import record

pytestmark = pytest.mark.django_db


def test_a_query_is_journalled_one_event_per_row_in_its_order_and_chained(db):
    User = get_user_model()
    for name in ("carol", "alice", "bob"):
        User.objects.create(username=name, email=f"{name}@example.org")
    record(1)

    with transaction.atomic():
        inserted = audit_record_select(
            rows=User.objects.order_by("username"), event_type="user.noticed", actor="ops (apikey:lm_k3y)",
            resource_type="user", action="user.notice", resource_id=F("username"),
            metadata=JSONObject(email=F("email")))
    audit_seal()  # the test transaction never commits: seal as the commit would

    assert inserted == 3
    events = list(AuditEvent.objects.filter(event_type="user.noticed").order_by("sequence_num"))
    assert [e.resource_id for e in events] == ["alice", "bob", "carol"]
    assert [e.metadata for e in events] == [{"email": f"{n}@example.org"} for n in ("alice", "bob", "carol")]
    first = events[0]
    assert (first.actor, first.user_id, first.api_key_prefix, first.success, first.resource_type) == (
        "ops (apikey:lm_k3y)", "ops", "lm_k3y", True, "user")
    assert [e.sequence_num for e in events] == [2, 3, 4]
    assert chain_verify().valid


def test_a_query_journalled_during_a_request_records_its_client_address_and_trace(db):
    from apps.core.middleware import client_ip_var, trace_id_var

    get_user_model().objects.create(username="dave")
    ip_token, trace_token = client_ip_var.set("10.1.2.3"), trace_id_var.set("trace-42")
    try:
        with transaction.atomic():
            audit_record_select(rows=get_user_model().objects.all(), event_type="user.noticed", actor="ops",
                                resource_type="user", action="user.notice", resource_id=F("username"),
                                metadata=JSONObject(email=F("email")))
    finally:
        client_ip_var.reset(ip_token)
        trace_id_var.reset(trace_token)
    audit_seal()

    event = AuditEvent.objects.get(event_type="user.noticed")
    assert (event.ip_address, event.trace_id, event.resource_id) == ("10.1.2.3", "trace-42", "dave")
    assert chain_verify().valid


def test_an_empty_query_journals_nothing(db):
    with transaction.atomic():
        assert audit_record_select(
            rows=get_user_model().objects.none(), event_type="user.noticed", actor="ops", resource_type="user",
            action="user.notice", resource_id=F("username"), metadata=JSONObject(email=F("email"))) == 0
    assert not AuditEvent.objects.exists()


def _received(layer, channel, expected: int) -> list[dict]:
    """The messages on `channel`: waits up to 5 s for each of the `expected` ones, then 0.3 s for any more."""
    async def drain():
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 5 if len(messages) < expected else 0.3))
            except TimeoutError:
                return messages
    return async_to_sync(drain)()


@pytest.mark.parametrize("count", [3, PUBLISH_EACH_MAX + 50])
def test_a_seal_rings_once_per_event_or_once_for_a_large_batch(db, django_capture_on_commit_callbacks, count):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("events", channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                audit_record_many([{"event_type": "thing.placed", "actor": "system", "resource_type": "thing",
                                    "resource_id": f"b-{i}", "action": "thing.place"} for i in range(count)])
        messages = _received(layer, channel, count if count <= PUBLISH_EACH_MAX else 1)
    finally:
        async_to_sync(layer.group_discard)("events", channel)

    if count <= PUBLISH_EACH_MAX:
        # one doorbell per event; over Redis the publisher sends them concurrently, so their order may vary
        # (the tail never relies on it: it re-reads the journal in sequence order)
        assert sorted(m["sequence_num"] for m in messages) == [1, 2, 3]
        assert {m["type"] for m in messages} == {"event.message"}
    else:
        assert messages == [{"type": "event.batch", "first_sequence_num": 1, "last_sequence_num": count,
                             "count": count}]
    assert AuditEvent.objects.filter(sequence_num__isnull=True).count() == 0
