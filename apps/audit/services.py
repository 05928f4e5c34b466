"""The one audit/event hook: every change is recorded here, in the caller's transaction.

Each row becomes a link of a hash chain (apps/audit/chain.py) in two steps:

1. `audit_record` / `audit_record_many` insert the rows in the caller's transaction, taking no lock: the
   events commit or roll back with the change they record.
2. Right after that transaction commits, `audit_seal` links every committed row not linked yet to the
   head of the chain (`sequence_num`, `prev_hash`, `event_hash` keyed by the chain key from outside the
   database, `chain_key_id`: apps/audit/keys.py), oldest id first, and hands those
   events to the live streams and webhooks with their sequence numbers (apps/audit/publish.py).
   Whoever seals, publishes.

Seals are serialised across processes by one advisory lock on PostgreSQL (SQLite: the database's write
lock, BEGIN IMMEDIATE), and a unique `sequence_num` backs that up. After a commit the writer only *tries*
the lock: if another process holds it, that process seals this row too, because a sealer looks for
unsealed rows once more after releasing the lock. A seal takes no other lock and touches only audit rows,
so it never deadlocks with the callers' row locks, which extending the chain inside the caller's
transaction would (docs/audit.md). Sealed rows never change again.
"""

import logging
import threading
from contextlib import contextmanager

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import CharField, Expression, QuerySet, Value
from django.utils import timezone

from apps.audit.anchors import Anchor, AnchorError, anchor_name, anchors_configured, anchors_write
from apps.audit.chain import CONTENT_FIELDS, GENESIS_HASH, anchor_mac, canonical_timestamp, keyed_hash, parse_actor
from apps.audit.keys import chain_keys
from apps.audit.models import AuditEvent
from apps.core.middleware import current_client_ip, current_trace_id

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system"
VERIFIED_EVENT = "audit.verified"
ANCHORED_EVENT = "audit.anchored"
REFUSED_EVENT = "api_call.refused"
# Advisory lock key of the chain ("LMAUDIT" in ASCII), bigint form: outside the int4 range of the
# hashtext() keys of apps.lablets.services.scheduling.advisory_lock, so the two never collide.
CHAIN_LOCK_KEY = 0x004C_4D41_5544_4954
SEAL_BATCH = 5000
_TABLE = AuditEvent._meta.db_table
# NULLs (unsealed rows) sort first in SQLite and last in PostgreSQL: exclude them rather than rely on it.
_HEAD_SQL = (f"SELECT sequence_num, event_hash FROM {_TABLE} WHERE sequence_num IS NOT NULL "
             "ORDER BY sequence_num DESC LIMIT 1")
_UNSEALED_SQL = f"SELECT 1 FROM {_TABLE} WHERE sequence_num IS NULL LIMIT 1"
_UNSEALED_ROWS_SQL = (f"SELECT id, {', '.join(CONTENT_FIELDS)} FROM {_TABLE} WHERE sequence_num IS NULL "
                      "ORDER BY id LIMIT %s")
_METADATA_AT = 1 + CONTENT_FIELDS.index("metadata")  # in an (id, *CONTENT_FIELDS) row
# The links of a batch as four comma-separated texts split by the server into columns (and the key id,
# the same for the whole batch): one statement of five parameters, whatever the batch's size (a VALUES list of 4 parameters a row, or Python lists
# adapted to arrays, cost the driver more time than the UPDATE cost the server). Numbers and hex
# digests hold no comma.
_SEAL_MANY_SQL = (f"UPDATE {_TABLE} AS e SET sequence_num = v.seq, prev_hash = v.prev, event_hash = v.digest, "
                  "chain_key_id = %s "
                  "FROM unnest(string_to_array(%s, ',')::bigint[], string_to_array(%s, ','), "
                  "string_to_array(%s, ','), string_to_array(%s, ',')::bigint[]) AS v(seq, prev, digest, id) "
                  "WHERE e.id = v.id AND e.sequence_num IS NULL")
_SEAL_SQL = (f"UPDATE {_TABLE} SET chain_key_id = %s, sequence_num = %s, prev_hash = %s, event_hash = %s "
             "WHERE id = %s AND sequence_num IS NULL")


def audit_record(
    *,
    event_type: str,
    actor: str,
    resource_type: str,
    resource_id: str,
    action: str,
    success: bool = True,
    error: str = "",
    metadata: dict | None = None,
    user_id: str | None = None,
    api_key_prefix: str | None = None,
) -> AuditEvent:
    """Append one audit row; must be called inside the transaction of the change it records.

    `user_id` / `api_key_prefix` default to what the actor string says (`alice (apikey:lm_ab12)`).
    The row is sealed into the chain and published right after the transaction commits."""
    row = _row(
        {"event_type": event_type, "actor": actor, "resource_type": resource_type, "resource_id": resource_id,
         "action": action, "success": success, "error": error, "metadata": metadata, "user_id": user_id,
         "api_key_prefix": api_key_prefix},
        ip=current_client_ip(),
        trace_id=current_trace_id(),
    )
    event = AuditEvent(timestamp=timezone.now(), **row)
    event.save(force_insert=True)
    _seal_on_commit()
    if not row["success"] and event_type != REFUSED_EVENT:
        _remember_failure_on_commit(row["trace_id"])
    return event


def audit_record_many(events: list[dict]) -> list[AuditEvent]:
    """Append many audit rows at once (the scheduler's batch pass): each dict takes audit_record's
    keyword arguments (the current request's trace id and address on every row). Same transaction rule, same seal and publication
    after commit: one INSERT per 1,000 rows, one seal for the whole batch (the chain computed in Python,
    one UPDATE round trip)."""
    if not events:
        return []
    ip, trace_id, now = current_client_ip(), current_trace_id(), timezone.now()
    created = AuditEvent.objects.bulk_create(
        [AuditEvent(timestamp=now, **_row(e, ip=ip, trace_id=trace_id)) for e in events], batch_size=1000
    )
    _seal_on_commit()
    if any(not event.success for event in created):
        _remember_failure_on_commit(created[0].trace_id)
    return created


def audit_record_select(
    *,
    rows: QuerySet,
    event_type: str,
    actor: str,
    resource_type: str,
    action: str,
    resource_id: Expression,
    metadata: Expression,
    with_clause: tuple[str, list | tuple] | None = None,
) -> int:
    """Append one audit row per row of `rows`, in the database: one INSERT ... SELECT, no row through
    Python (the bulk path of a pass that journals a hundred thousand changes, e.g. stale reaping).

    `resource_id` and `metadata` are expressions over `rows`' model (a text Cast of its key, a
    JSONObject of its columns); the other columns are the same for every row, as audit_record would
    write them. The rows are inserted in `rows`' order (the chain's order). Same transaction rule, same
    seal and publication after commit as audit_record_many. Returns how many rows were inserted.

    `with_clause` (PostgreSQL): (sql, params) of a data-modifying statement with RETURNING, put in a
    WITH clause named as `rows`' table, so that the SELECT reads the rows that statement returned, e.g.
    the rows a DELETE removed, journalled by the same statement that removes them."""
    row = _row({"event_type": event_type, "actor": actor, "resource_type": resource_type, "resource_id": "",
                "action": action}, ip=current_client_ip(), trace_id=current_trace_id())
    constants = {name: Value(value, output_field=AuditEvent._meta.get_field(name))
                 for name, value in row.items() if name not in ("resource_id", "metadata")}
    columns = {"timestamp": Value(timezone.now(), output_field=AuditEvent._meta.get_field("timestamp")),
               **constants, "resource_id": resource_id, "metadata": metadata,
               "prev_hash": Value("", output_field=CharField()), "event_hash": Value("", output_field=CharField())}
    aliases = {f"_audit_{name}": expression for name, expression in columns.items()}
    select = rows.annotate(**aliases).values_list(*aliases)
    try:
        sql, params = select.query.get_compiler(using=select.db).as_sql()
    except EmptyResultSet:  # a query that cannot match (`.none()`, `pk__in=[]`)
        return 0
    quote = connection.ops.quote_name
    statement = f"INSERT INTO {quote(_TABLE)} ({', '.join(quote(name) for name in columns)}) {sql}"
    if with_clause is not None:
        with_sql, with_params = with_clause
        statement = f"WITH {quote(rows.model._meta.db_table)} AS ({with_sql}) {statement}"
        params = (*with_params, *params)
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        inserted = cursor.rowcount
    if inserted:
        _seal_on_commit()
    return inserted


def audit_api_refusal(
    *,
    actor: str,
    method: str,
    path: str,
    view: str,
    status: int,
    title: str,
    detail: str,
    errors: dict | None = None,
) -> AuditEvent | None:
    """Journal a refused state-changing API call (the problem+json answer of a POST/PUT/PATCH/DELETE).

    The refused change rolled back with its transaction, so this is a transaction of its own, written
    when the refusal is answered. One event per call: if the call already committed a failure event of
    its own (`worker.ec2_failed`, `worker.license_failed`, ...: same trace id), nothing more is written
    and None is returned."""
    trace_id = current_trace_id()
    with _COMMITTED_FAILURES_LOCK:
        already = _COMMITTED_FAILURES.pop(trace_id, False)
    if already:
        return None
    metadata = {"method": method, "path": path, "view": view, "status": status, "title": title}
    if errors:
        metadata["errors"] = errors
    with transaction.atomic():
        return audit_record(
            event_type=REFUSED_EVENT, actor=actor, resource_type="api_call", resource_id=path[:64],
            action=f"{method} {view or path}"[:100], success=False, error=detail[:1000], metadata=metadata,
        )


def audit_seal(*, wait: bool = True, batch_size: int = SEAL_BATCH) -> int:
    """Link every committed, unsealed row to the chain and publish it; returns how many were sealed.

    Idempotent; safe from anywhere at any time (after each commit, before a verification, from a job).
    With `wait=False` it returns at once when another process is sealing (that one seals for us)."""
    total = 0
    for _round in range(1000):
        with _chain_lock(wait=wait) as held:
            if not held:
                return total
            while True:
                sealed = _seal_batch(batch_size)
                total += len(sealed)
                _publish_after_commit(sealed)
                if len(sealed) < batch_size:
                    break
        # Rows committed after our last look, whose writers found the lock taken, are ours to seal.
        if connection.vendor != "postgresql" or connection.in_atomic_block or not _unsealed_exist():
            return total
        wait = False  # if someone else has the lock now, they will see those rows
    log.warning("audit_seal: still finding unsealed rows after 1000 rounds; the next seal continues")
    return total


def audit_verify(*, actor: str, record: bool = True, progress=None):
    """Seal what is committed, verify the whole chain (apps/audit/verify.py), and journal the check as
    `audit.verified` (success = the chain is intact). Returns the Verification."""
    from apps.audit.verify import chain_verify

    audit_seal()
    result = chain_verify(progress=progress)
    if record:
        with transaction.atomic():
            audit_record(
                event_type=VERIFIED_EVENT, actor=actor, resource_type="audit_chain", resource_id="journal",
                action="audit.verify", success=result.valid, error=result.reason,
                metadata={"total_events": result.total_events, "first_tampered": result.first_tampered,
                          "chain_root_hash": result.chain_root_hash, "keyed_from": result.keyed_from,
                          "anchors_checked": result.anchors_checked},
            )
    return result


def audit_anchor(*, actor: str) -> list[Anchor]:
    """Seal what is committed, then write the head of the chain (sequence number, hash, time, and their
    HMAC with the chain key) to every anchor store outside the database (apps/audit/anchors.py), and journal
    it as `audit.anchored`. Returns the anchor as written to each store; [] for an empty journal.

    Raises AnchorError when no store is configured, or when a store cannot be written (journalled as a
    failed `audit.anchored`)."""
    if not anchors_configured():
        raise AnchorError("no anchor store: set AUDIT_ANCHOR_DIR and/or AUDIT_ANCHOR_BUCKET")
    audit_seal()
    sequence, digest = chain_head()
    if not sequence:
        return []
    keys, now = chain_keys(), timezone.now()
    anchored_at = canonical_timestamp(now)
    mac = anchor_mac(sequence_num=sequence, event_hash=digest, anchored_at=anchored_at, key_id=keys.seal_id,
                     key=keys.seal_key)
    anchor = Anchor(sequence_num=sequence, event_hash=digest, anchored_at=anchored_at, key_id=keys.seal_id, mac=mac,
                    location="")
    metadata = {"sequence_num": sequence, "event_hash": digest, "anchored_at": anchored_at}
    try:  # network and file I/O: outside any transaction
        locations = anchors_write(anchor, name=anchor_name(sequence, now))
    except AnchorError as exc:
        with transaction.atomic():
            audit_record(event_type=ANCHORED_EVENT, actor=actor, resource_type="audit_chain", resource_id="journal",
                         action="audit.anchor", success=False, error=str(exc)[:1000], metadata=metadata)
        raise
    with transaction.atomic():
        audit_record(event_type=ANCHORED_EVENT, actor=actor, resource_type="audit_chain", resource_id="journal",
                     action="audit.anchor", metadata={**metadata, "locations": locations})
    return [Anchor(**{**anchor.document(), "location": location}) for location in locations]


def chain_head() -> tuple[int, str]:
    """(sequence_num, event_hash) of the last sealed event, or (0, GENESIS_HASH) for an empty chain."""
    with connection.cursor() as cursor:
        cursor.execute(_HEAD_SQL)
        head = cursor.fetchone()
    return (head[0], head[1]) if head else (0, GENESIS_HASH)


def _row(e: dict, *, ip: str | None, trace_id: str) -> dict:
    """The columns of one event except the chain's (sequence_num, prev_hash, event_hash) and timestamp."""
    actor = e.get("actor") or SYSTEM_ACTOR
    parsed_user, parsed_prefix = parse_actor(actor)
    user_id = e.get("user_id")
    prefix = e.get("api_key_prefix")
    return {
        "event_type": e["event_type"],
        "actor": actor,
        "user_id": str(user_id) if user_id is not None else parsed_user,
        "api_key_prefix": prefix if prefix is not None else parsed_prefix,
        "resource_type": e["resource_type"],
        "resource_id": str(e["resource_id"]),
        "action": e["action"],
        "success": bool(e.get("success", True)),
        "ip_address": ip,
        "error": str(e.get("error") or ""),
        "trace_id": "" if trace_id == "-" else trace_id,
        "metadata": e.get("metadata") or {},
    }


# Trace ids of requests that committed a failure event (audit_api_refusal then writes no second one).
# Per process, like the request that reads it; bounded (jobs have no trace id and are never kept).
_COMMITTED_FAILURES: dict[str, bool] = {}
_COMMITTED_FAILURES_MAX = 10_000
_COMMITTED_FAILURES_LOCK = threading.Lock()


def _remember_failure_on_commit(trace_id: str) -> None:
    if not trace_id or trace_id == "-":
        return

    def remember():
        with _COMMITTED_FAILURES_LOCK:
            _COMMITTED_FAILURES[trace_id] = True
            while len(_COMMITTED_FAILURES) > _COMMITTED_FAILURES_MAX:
                _COMMITTED_FAILURES.pop(next(iter(_COMMITTED_FAILURES)))

    transaction.on_commit(remember)


def _seal_on_commit() -> None:
    """Seal after the current transaction commits: one hook per transaction, however many events."""
    if connection.in_atomic_block and any(func is _seal_after_commit for _, func, _ in connection.run_on_commit):
        return
    transaction.on_commit(_seal_after_commit)


def _seal_after_commit() -> None:
    """on_commit hook of every transaction that journals. Never raises: the change is committed, and
    the next seal (any commit, a verification) links whatever is left."""
    try:
        audit_seal(wait=False)
    except Exception:
        log.warning("Could not seal the audit journal after a commit", exc_info=True)


@contextmanager
def _chain_lock(*, wait: bool):
    """Hold the right to extend the chain. PostgreSQL: a session advisory lock, released on exit (inside
    a caller's transaction, a transaction one, released when that ends). SQLite: every write transaction
    holds the database's write lock from its BEGIN IMMEDIATE, so there is nothing to take here."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
            yield True
            return
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [CHAIN_LOCK_KEY])
            if not cursor.fetchone()[0]:
                yield False
                return
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_KEY])


def _unsealed_exist() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_UNSEALED_SQL)
        return cursor.fetchone() is not None


class SealedEvent:
    """A row as a seal linked it, handed to the live streams and webhooks: read like an AuditEvent
    without the cost of building model instances for a large seal."""

    __slots__ = ("id", "sequence_num", "prev_hash", "event_hash", *CONTENT_FIELDS)

    def __init__(self, id: int, sequence_num: int, prev_hash: str, event_hash: str, content: tuple):
        self.id, self.sequence_num, self.prev_hash, self.event_hash = id, sequence_num, prev_hash, event_hash
        for name, value in zip(CONTENT_FIELDS, content):
            setattr(self, name, value)

    @property
    def pk(self) -> int:
        return self.id


def _seal_batch(limit: int) -> list[SealedEvent]:
    """One transaction: link up to `limit` unsealed rows after the head; returns them, sealed."""
    with transaction.atomic():
        sequence, prev = chain_head()  # under the chain lock: nobody else moves the head meanwhile
        rows = _unsealed_rows(limit)
        if not rows:
            return []
        keys = chain_keys()  # from the settings: no query
        key = keys.seal_key
        sealed, params = [], []
        for row in rows:
            sequence += 1
            digest = keyed_hash((sequence, prev, *row[1:]), key)
            params.append((sequence, prev, digest, row[0]))
            sealed.append(SealedEvent(row[0], sequence, prev, digest, row[1:]))
            prev = digest
        _write_links(params, keys.seal_id)
    return sealed


def _write_links(params: list[tuple], key_id: str) -> None:
    """Store (sequence_num, prev_hash, event_hash, id) links sealed with the key `key_id`. PostgreSQL: one
    UPDATE ... FROM unnest(...) for the whole batch (a batch seal of 10,000 rows took 0.75 s with one
    UPDATE a row)."""
    with connection.cursor() as cursor:
        if len(params) == 1:
            cursor.execute(_SEAL_SQL, (key_id, *params[0]))
            return
        if connection.vendor != "postgresql":
            cursor.executemany(_SEAL_SQL, [(key_id, *link) for link in params])
            return
        cursor.execute(_SEAL_MANY_SQL, [key_id, *(",".join(map(str, column)) for column in zip(*params))])


def _unsealed_rows(limit: int) -> list[tuple]:
    """(id, *CONTENT_FIELDS) of the oldest unsealed rows, valued as the ORM reads them. PostgreSQL: plain
    SQL (the seal runs after every commit: no ORM query is built each time); the
    values are what psycopg gives the ORM, except metadata, which the JSONField decodes."""
    if connection.vendor != "postgresql":
        return list(AuditEvent.objects.filter(sequence_num__isnull=True).order_by("id")
                    .values_list("id", *CONTENT_FIELDS)[:limit])
    with connection.cursor() as cursor:
        cursor.execute(_UNSEALED_ROWS_SQL, [limit])
        rows = cursor.fetchall()
    decode, at = AuditEvent._meta.get_field("metadata").from_db_value, _METADATA_AT
    return [(*row[:at], decode(row[at], None, connection), *row[at + 1:]) for row in rows]


def _publish_after_commit(events: list[SealedEvent]) -> None:
    from apps.audit.publish import deliver

    if events:
        transaction.on_commit(lambda: deliver(events))  # at once when not inside a transaction
