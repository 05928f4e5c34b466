"""The chain is built as documented: gapless, each event hashed over its content and its predecessor."""

import hashlib
import hmac
import json
import random
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical, canonical_timestamp, parse_actor
from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_record_many, audit_seal
from apps.audit.verify import chain_verify
from tests.audit.conftest import record

pytestmark = pytest.mark.django_db


def _documented_key() -> bytes:
    # AUDIT_CHAIN_KEY unset (the tests' settings): the key derived from SECRET_KEY, as docs/audit.md says.
    assert not settings.AUDIT_CHAIN_KEY
    return hashlib.sha256(b"labmanager.audit-chain\0" + settings.SECRET_KEY.encode()).digest()


def _recompute(event: AuditEvent) -> str:
    # The documented canonical form and keyed hash, written out independently of apps/audit/chain.py.
    doc = {
        "sequence_num": event.sequence_num, "prev_hash": event.prev_hash,
        "timestamp": canonical_timestamp(event.timestamp), "event_type": event.event_type, "actor": event.actor,
        "user_id": event.user_id, "api_key_prefix": event.api_key_prefix, "resource_type": event.resource_type,
        "resource_id": event.resource_id, "action": event.action, "success": event.success,
        "ip_address": event.ip_address, "error": event.error, "trace_id": event.trace_id, "metadata": event.metadata,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert event.chain_key_id == hashlib.sha256(b"labmanager.audit-chain.key-id\0" + _documented_key()).hexdigest()[:16]
    return hmac.new(_documented_key(), canonical, hashlib.sha256).hexdigest()


def test_events_are_chained_in_order_without_gaps(chain):
    assert [e.sequence_num for e in chain] == list(range(1, 11))
    assert chain[0].prev_hash == GENESIS_HASH
    for before, after in zip(chain, chain[1:]):
        assert after.prev_hash == before.event_hash
    for event in chain:
        assert event.event_hash == _recompute(event)


def test_a_sound_chain_verifies(chain):
    result = chain_verify(chunk_size=3)  # several chunks, boundaries included

    assert result.valid
    assert result.total_events == 10
    assert result.first_tampered is None
    assert result.chain_root_hash == chain[-1].event_hash


def test_an_empty_journal_is_valid(db):
    result = chain_verify()

    assert (result.valid, result.total_events, result.chain_root_hash) == (True, 0, None)


def test_an_event_is_sealed_and_published_with_its_sequence_number_after_commit(db, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("events", channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                event = audit_record(event_type="thing.made", actor="alice", resource_type="thing",
                                     resource_id="t-1", action="thing.make")
                assert event.sequence_num is None, "linked after commit, not inside the caller's transaction"
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)("events", channel)

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.sequence_num == AuditEvent.objects.count()
    assert (message["id"], message["sequence_num"]) == (stored.pk, stored.sequence_num)
    assert {"type", "id", "event_type", "resource_type", "resource_id", "action", "metadata", "timestamp"} <= set(message)


def test_a_rolled_back_change_leaves_no_event_and_no_gap(db, django_capture_on_commit_callbacks):
    record(2)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit_record(event_type="thing.made", actor="x", resource_type="thing", resource_id="t", action="a")
            raise RuntimeError("the change fails")
    record(1)
    audit_seal()

    assert list(AuditEvent.objects.values_list("sequence_num", flat=True).order_by("sequence_num")) == [1, 2, 3]
    assert chain_verify().valid


def test_a_batch_is_chained_like_single_appends(db):
    record(3)
    with transaction.atomic():
        audit_record_many([
            {"event_type": "thing.placed", "actor": "system", "resource_type": "thing", "resource_id": f"b-{i}",
             "action": "thing.place", "metadata": {"i": i}}
            for i in range(2500)
        ])
    record(2)

    assert audit_seal(batch_size=1000) == 2505
    assert AuditEvent.objects.filter(sequence_num__isnull=True).count() == 0
    result = chain_verify(chunk_size=700)
    assert (result.valid, result.total_events) == (True, 2505)
    batch = list(AuditEvent.objects.filter(event_type="thing.placed").order_by("sequence_num")
                 .values_list("sequence_num", flat=True))
    assert batch == list(range(4, 2504)), "the batch keeps its order, in one run"


def test_sealing_is_idempotent(chain):
    assert audit_seal() == 0
    assert AuditEvent.objects.count() == 10


@pytest.mark.parametrize("actor, user_id, prefix", [
    ("alice", "alice", ""),
    ("alice (apikey:lm_Ab3-x_)", "alice", "lm_Ab3-x_"),
    ("apikey:lm_Zz9", None, "lm_Zz9"),
    ("system", None, ""),
    ("anonymous", None, ""),
])
def test_the_actor_gives_user_id_and_key_prefix(actor, user_id, prefix):
    assert parse_actor(actor) == (user_id, prefix)


def test_an_api_call_journals_who_from_where_with_which_key(operator_client, operator_user):
    response = operator_client.post("/api/workers", {"name": "journalled"}, format="json", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 201

    event = AuditEvent.objects.get(event_type="worker.created")
    assert event.user_id == operator_user.username
    assert event.api_key_prefix == operator_client.raw_key[:10]
    assert event.ip_address == "10.1.2.3"
    assert event.trace_id == response["X-Trace-Id"]


def test_metadata_of_every_json_kind_hashes_the_same_after_the_round_trip(db):
    with transaction.atomic():
        audit_record(event_type="thing.made", actor="x", resource_type="thing", resource_id="t", action="a",
                     metadata={"z": 1, "a": [1.5, 1e20, 1e-7, -0.0, True, None, "é\u2028"], "big": 2**62,
                               "nested": {"y": {"x": []}}, "tuple": (1, 2)})
    audit_seal()

    assert chain_verify().valid


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "none", "bool"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice('aZ09 "\\/\n\t\x00\x7fé€😀\u2028<>&') for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.choice([0, -1, 2**31, -(2**63), 2**64 + 1, rng.randint(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([0.1, -0.0, 1e20, 1e-7, 1.5, 3.141592653589793, float(rng.randint(0, 99))])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {"".join(rng.choice("abé_Z 9\"") for _ in range(rng.randint(0, 6))): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def test_the_fast_canonical_form_is_the_documented_json_dumps_form():
    # chain.canonical() writes the bytes itself; the definition is json.dumps over a dict (module docstring).
    rng = random.Random(20261122)
    for _ in range(3000):
        stamp = datetime(2026, 1, 1, tzinfo=dt_timezone.utc) + timedelta(microseconds=rng.randint(0, 10**13))
        row = (rng.randint(1, 10**12), rng.choice([GENESIS_HASH, "ab" * 32]), stamp,
               *(_random_value(rng) if rng.random() < 0.2 else "x" for _ in range(6)),
               rng.choice(["a", "é"]), rng.random() < 0.5, rng.choice([None, "10.0.0.7", "::1"]),
               _random_value(rng), rng.choice(["", "f" * 32]), {"m": _random_value(rng), "k": [1, 2]})
        doc = dict(zip(HASHED_FIELDS, row))
        doc["timestamp"] = canonical_timestamp(stamp)
        reference = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        assert canonical(row) == reference, row
        assert canonical((*row[:2], canonical_timestamp(stamp), *row[3:])) == reference


@pytest.mark.parametrize("stamp", [
    datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt_timezone.utc),  # a whole second: still six fractional digits
    datetime(2026, 3, 1, 12, 0, 0, 7, tzinfo=dt_timezone(timedelta(hours=-5))),  # not UTC
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt_timezone.utc),
])
def test_timestamps_hash_the_same_when_sealed_and_when_verified(db, stamp):
    AuditEvent(timestamp=stamp, event_type="thing.made", actor="x", resource_type="thing", resource_id="t",
               action="a").save(force_insert=True)
    audit_seal()

    assert chain_verify().valid


@pytest.mark.parametrize("address", ["10.1.2.3", "2001:db8:0:0::1"])
def test_what_the_seal_hashed_is_what_the_orm_reads_back(operator_client, address):
    # The seal reads rows with plain SQL on PostgreSQL; the hash must be the one of the values as the
    # application reads them (an inet comes back compressed, jsonb with its own key order).
    response = operator_client.post("/api/workers", {"name": "hashed"}, format="json", REMOTE_ADDR=address)
    assert response.status_code == 201
    audit_seal()

    event = AuditEvent.objects.get(event_type="worker.created")
    assert event.ip_address in (address, "2001:db8::1")
    assert event.event_hash == _recompute(event)
    assert chain_verify().valid
