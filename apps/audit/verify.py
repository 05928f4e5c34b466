"""Checking the chain: stream the journal in sequence order, in chunks, and recompute every link.

Constant memory: each chunk is one keyset query (`sequence_num > last ORDER BY sequence_num LIMIT n`,
through the unique index), read into a list of tuples and dropped before the next. On PostgreSQL the
chunks are read with plain SQL (the timestamp formatted by the database) by a helper thread one chunk
ahead, so the database reads while Python hashes (1,000,000 events: docs/performance.md). What it finds:

- an edited row: its event_hash no longer matches its content (or its prev_hash was edited);
- a deleted row: a gap in the sequence (or, if the sequence was renumbered, a prev_hash mismatch);
- reordered rows (sequence numbers or contents swapped): a prev_hash mismatch at the first moved row;
- an inserted row: a hash or prev_hash mismatch where it was put in.

`first_tampered` is the first sequence number at which the chain breaks: for a deleted row, the
missing number. What a chain alone cannot show is a forged tail (rows appended, or the last rows cut
off, by someone who recomputes the hashes): compare `chain_root_hash` with a root you kept elsewhere
(GET /api/audit/chain-root) for that. docs/audit.md.
"""

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.utils import timezone

from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash
from apps.audit.models import AuditEvent
from apps.audit.services import chain_head

CHUNK = 2_000  # rows per query: a few MB in memory, and 500 queries per million events
_TABLE = AuditEvent._meta.db_table
# PostgreSQL: the columns as the ORM reads them (Django loads jsonb and inet as text), the timestamp
# already in canonical_timestamp() form: no datetime parsing and re-formatting per row.
_PG_CHUNK_SQL = (
    "SELECT sequence_num, prev_hash, "
    """to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), """
    + ", ".join(HASHED_FIELDS[3:]) + f", event_hash FROM {_TABLE} "
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


def chain_verify(*, chunk_size: int = CHUNK, progress: Callable[[int, int], None] | None = None) -> Verification:
    """Verify the sealed chain from its first event up to the head as it is when this starts (events
    sealed meanwhile are left for the next verification). `progress(done, total)` after each chunk."""
    upto, root = chain_head()
    expected, prev, checked = 1, GENESIS_HASH, 0
    first_tampered, reason = None, ""
    with _chunks(upto, chunk_size) as chunks:
        for rows in chunks:
            for row in rows:
                sequence = row[0]
                if sequence != expected:
                    first_tampered, reason = expected, f"event {expected} is missing (the next event is {sequence})"
                elif row[1] != prev:
                    first_tampered, reason = sequence, f"event {sequence}: prev_hash is not the hash of event {sequence - 1}"
                elif event_hash(row) != row[-1]:  # the hash reads HASHED_FIELDS only
                    first_tampered, reason = sequence, f"event {sequence}: event_hash does not match its content"
                else:
                    prev, expected = row[-1], sequence + 1
                    continue
                break
            if first_tampered is not None:
                break
            checked += len(rows)
            if progress:
                progress(min(checked, upto), upto)
    if first_tampered is None and expected != upto + 1:
        first_tampered, reason = expected, f"event {expected} is missing (the chain ends at {expected - 1})"
    total = upto if first_tampered is None else AuditEvent.objects.filter(
        sequence_num__isnull=False, sequence_num__lte=upto).count()
    return Verification(
        valid=first_tampered is None,
        total_events=total,
        first_tampered=first_tampered,
        chain_root_hash=root if upto else None,
        verified_at=timezone.now(),
        reason=reason,
    )


@contextmanager
def _chunks(upto: int, size: int):
    """Chunks of rows (HASHED_FIELDS + event_hash) in sequence order, up to `upto`. On PostgreSQL outside
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
                .order_by("sequence_num").values_list(*HASHED_FIELDS, "event_hash")[:size])


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
