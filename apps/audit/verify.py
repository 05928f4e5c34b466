"""Checking the chain: stream the journal in sequence order, in chunks, and recompute every link with
the chain keys (apps/audit/keys.py), then hold the journal against the anchors kept outside the database.

Constant memory: each chunk is one keyset query (`sequence_num > last ORDER BY sequence_num LIMIT n`,
through the unique index), read into a list of tuples and dropped before the next. On PostgreSQL the
chunks are read with plain SQL (the timestamp formatted by the database) by a helper thread one chunk
ahead, so the database reads while Python hashes (1,000,000 events: docs/performance.md). What it finds:

- an edited row: its event_hash no longer matches its content (or its prev_hash was edited);
- a deleted row: a gap in the sequence (or, if the sequence was renumbered, a prev_hash mismatch);
- reordered rows (sequence numbers or contents swapped): a prev_hash mismatch at the first moved row;
- an inserted row: a hash or prev_hash mismatch where it was put in.

- a row re-hashed by someone without the key (plain SHA-256, or another key): its event_hash does not
  match, or it names a key that is not configured, or it is plain SHA-256 past AUDIT_CHAIN_PLAIN_UNTIL or
  after a keyed row;
- a journal re-sealed with an old key, or one derived from SECRET_KEY: the row names a key past the last
  event that key may have sealed (apps/audit/keys.py: its `@<last event>`, AUDIT_CHAIN_DERIVED_UNTIL);
- a truncated tail, or a rewrite by someone who has the key: an anchor (apps/audit/anchors.py) whose
  event is missing or has another hash.

`first_tampered` is the first sequence number at which the chain breaks: for a deleted row, the
missing number. docs/audit.md#what-the-chain-proves.
"""

import hmac
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.audit.anchors import Anchor, AnchorError, BadAnchor, anchors_read
from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, PLAIN, anchor_mac, event_hash, keyed_hash
from apps.audit.keys import ChainKeys, chain_keys
from apps.audit.models import AuditEvent
from apps.audit.services import chain_head

CHUNK = 2_000  # rows per query: a few MB in memory, and 500 queries per million events
_TABLE = AuditEvent._meta.db_table
# PostgreSQL: the columns as the ORM reads them (Django loads jsonb and inet as text), the timestamp
# already in canonical_timestamp() form: no datetime parsing and re-formatting per row.
_PG_CHUNK_SQL = (
    "SELECT sequence_num, prev_hash, "
    """to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), """
    + ", ".join(HASHED_FIELDS[3:]) + f", chain_key_id, event_hash FROM {_TABLE} "
    "WHERE sequence_num > %s AND sequence_num <= %s ORDER BY sequence_num LIMIT %s"
)
_METADATA = HASHED_FIELDS.index("metadata")


@dataclass(frozen=True)
class Verification:
    valid: bool
    total_events: int
    first_tampered: int | None
    chain_root_hash: str | None
    verified_at: datetime
    reason: str = ""
    keyed_from: int | None = None  # the first event sealed with a key (before it: plain SHA-256 events)
    anchors_checked: int = 0


def chain_verify(*, chunk_size: int = CHUNK, progress: Callable[[int, int], None] | None = None) -> Verification:
    """Verify the sealed chain from its first event up to the head as it is when this starts (events
    sealed meanwhile are left for the next verification), then against the anchors. `progress(done, total)`
    after each chunk."""
    keys, plain_until = chain_keys(), settings.AUDIT_CHAIN_PLAIN_UNTIL
    if keys.problems:  # an old key without its last event would verify a journal re-sealed with it
        return _failed(None, "; ".join(keys.problems))
    try:  # before the head is read: every anchor found was written for a head at or before it
        anchors = anchors_read()
    except (AnchorError, BadAnchor) as exc:
        reason = f"anchor {exc} is not an anchor document" if isinstance(exc, BadAnchor) else str(exc)
        return _failed(None, reason)
    for anchor in anchors:
        if not _anchor_genuine(anchor, keys):
            return _failed(None, f"anchor {anchor.location}: its MAC does not verify with the chain keys")
    anchored: dict[int, Anchor] = {}
    for anchor in anchors:  # anchors of one event (two stores, two runs) must agree
        other = anchored.setdefault(anchor.sequence_num, anchor)
        if other.event_hash != anchor.event_hash:
            return _failed(anchor.sequence_num, f"event {anchor.sequence_num}: the anchors {other.location} and "
                                                f"{anchor.location} hold two different hashes")
    upto, root = chain_head()
    expected, prev, checked = 1, GENESIS_HASH, 0
    first_tampered, reason = None, ""
    current, key, until, keyed_from = PLAIN, None, plain_until, None
    with _chunks(upto, chunk_size) as chunks:
        for rows in chunks:
            for row in rows:
                sequence = row[0]
                if sequence != expected:
                    first_tampered, reason = expected, f"event {expected} is missing (the next event is {sequence})"
                    break
                if row[1] != prev:
                    first_tampered, reason = sequence, f"event {sequence}: prev_hash is not the hash of event {sequence - 1}"
                    break
                if row[-2] != current:  # another key than the event before (rare: a rotation, the first keyed event)
                    refused = _key_change(sequence, row[-2], keys)
                    if refused:
                        first_tampered, reason = sequence, refused
                        break
                    current = row[-2]
                    key, until = keys.by_id[current], keys.last[current]
                    keyed_from = keyed_from or sequence
                if until is not None and sequence > until:  # past the span of its key
                    first_tampered, reason = sequence, _past_span(sequence, current, keys, plain_until)
                    break
                if key is None:
                    digest = event_hash(row)  # the hash reads HASHED_FIELDS only
                else:
                    digest = keyed_hash(row, key)
                if digest != row[-1]:
                    first_tampered, reason = sequence, f"event {sequence}: event_hash does not match its content"
                    break
                if sequence in anchored and anchored[sequence].event_hash != digest:
                    first_tampered, reason = sequence, (
                        f"event {sequence}: its hash is not the one anchored in {anchored[sequence].location} "
                        f"at {anchored[sequence].anchored_at}")
                    break
                prev, expected = digest, sequence + 1
            if first_tampered is not None:
                break
            checked += len(rows)
            if progress:
                progress(min(checked, upto), upto)
    if first_tampered is None and expected != upto + 1:
        first_tampered, reason = expected, f"event {expected} is missing (the chain ends at {expected - 1})"
    if first_tampered is None and anchored and max(anchored) > upto:
        last = anchored[max(anchored)]
        first_tampered, reason = upto + 1, (
            f"events {upto + 1} to {last.sequence_num} are missing: event {last.sequence_num} was anchored in "
            f"{last.location} at {last.anchored_at}, the journal ends at {upto}")
    total = upto if first_tampered is None else AuditEvent.objects.filter(
        sequence_num__isnull=False, sequence_num__lte=upto).count()
    return Verification(
        valid=first_tampered is None,
        total_events=total,
        first_tampered=first_tampered,
        chain_root_hash=root if upto else None,
        verified_at=timezone.now(),
        reason=reason,
        keyed_from=keyed_from,
        anchors_checked=len(anchors),
    )


def _key_change(sequence: int, after: str, keys: ChainKeys) -> str:
    """Why event `sequence` may not be sealed with the key `after`, another key than event `sequence - 1`'s
    (empty: it may; its span is checked next)."""
    if after == PLAIN:
        return f"event {sequence}: sealed with plain SHA-256 (no key) after event {sequence - 1}, sealed with a key"
    if after not in keys.by_id:
        return (f"event {sequence}: sealed with key {after}, which is not one of the chain keys (AUDIT_CHAIN_KEY, "
                "or the key derived from SECRET_KEY): a wrong key, or a row rewritten without the key")
    return ""


def _past_span(sequence: int, key: str, keys: ChainKeys, plain_until: int) -> str:
    """Why event `sequence` may not be sealed with `key`: the key sealed no event after its last one."""
    if key == PLAIN:
        return (f"event {sequence}: sealed with plain SHA-256 (no key), but every event after "
                f"AUDIT_CHAIN_PLAIN_UNTIL ({plain_until}) must be keyed")
    name, bound = keys.names[key]
    return (f"event {sequence}: sealed with key {key} ({name}), accepted up to event {keys.last[key]} ({bound}) "
            f"only: the journal was re-sealed with a key past the events it sealed, or {bound} is wrong")


def _anchor_genuine(anchor: Anchor, keys: ChainKeys) -> bool:
    key = keys.by_id.get(anchor.key_id)
    if key is None:
        return False
    expected = anchor_mac(sequence_num=anchor.sequence_num, event_hash=anchor.event_hash,
                          anchored_at=anchor.anchored_at, key_id=anchor.key_id, key=key)
    return hmac.compare_digest(expected, anchor.mac)


def _failed(first_tampered: int | None, reason: str) -> Verification:
    """A verification that could not start: the anchors could not be read or one is not genuine."""
    return Verification(valid=False, total_events=chain_head()[0], first_tampered=first_tampered,
                        chain_root_hash=None, verified_at=timezone.now(), reason=reason,
                        anchors_checked=0)


@contextmanager
def _chunks(upto: int, size: int):
    """Chunks of rows (HASHED_FIELDS + chain_key_id + event_hash) in sequence order, up to `upto`. On PostgreSQL outside
    a transaction a helper thread reads one chunk ahead, on its own connection, while this one hashes;
    inside a transaction (tests) it must read on this connection, which sees that transaction's rows."""
    if connection.vendor != "postgresql":
        yield _read_all(_orm_chunk, upto, size)
    elif connection.in_atomic_block:
        yield _read_all(_pg_chunk, upto, size)
    else:
        with _read_ahead(_pg_chunk, upto, size) as chunks:
            yield chunks


def _read_all(read_chunk, upto: int, size: int) -> Iterator[list]:
    last = 0
    while last < upto:
        rows = read_chunk(last, upto, size)
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _orm_chunk(after: int, upto: int, size: int) -> list:
    return list(AuditEvent.objects.filter(sequence_num__gt=after, sequence_num__lte=upto)
                .order_by("sequence_num").values_list(*HASHED_FIELDS, "chain_key_id", "event_hash")[:size])


def _pg_chunk(after: int, upto: int, size: int) -> list:
    with connection.cursor() as cursor:
        cursor.execute(_PG_CHUNK_SQL, [after, upto, size])
        rows = cursor.fetchall()
    loads = AuditEvent._meta.get_field("metadata").from_db_value
    return [(*row[:_METADATA], loads(row[_METADATA], None, connection), *row[_METADATA + 1:]) for row in rows]


_DONE = object()


@contextmanager
def _read_ahead(read_chunk, upto: int, size: int):
    """_read_all() run by a helper thread, at most one chunk ahead (constant memory)."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for rows in _read_all(read_chunk, upto, size):
                if not put(rows):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the verifying thread, raised there
            put(error)
        finally:
            connection.close()  # this thread's own connection

    def chunks() -> Iterator[list]:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    thread = threading.Thread(target=reader, name="audit-verify-reader", daemon=True)
    thread.start()
    try:
        yield chunks()
    finally:
        stop.set()
        thread.join(60)
