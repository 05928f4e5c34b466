"""The FIFO queue of each pool: create, heartbeat, end, promotion and stale reaping.

A session's ticket is its arrival order and its position is derived from the tickets when read
(Session.position), so joining the queue touches no other row:

- a new session takes a ticket (a PostgreSQL sequence; the pool's counter on SQLite) and is inserted
  holding only the pool's queue lock in SHARED mode (a PostgreSQL advisory lock): any number of them
  run at once;
- whatever hands out workers (promotion: at a session's end, in the reaping, for a new session at the
  head of the queue) locks the pool's row and takes the same queue lock EXCLUSIVELY, which waits for
  the inserts in flight to commit. So a promotion sees every session that took a ticket before it, and
  the head of the queue it serves is the lowest ticket there is: strict FIFO across processes.

Lock order: pool rows (by pk) → queue locks → lab slots (by pk) → the audit chain. SQLite serialises
writers anyway (BEGIN IMMEDIATE), so there the locks are the database's.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, F, Q, QuerySet, Value, When
from django.db.models.functions import Cast, Concat, JSONObject, Substr
from django.db.models.sql.subqueries import DeleteQuery
from django.utils import timezone

from apps.audit.services import audit_record, audit_record_select
from apps.sessions.lifecycle import LIVE
from apps.sessions.models import Session, SessionLab, SessionPool, SessionStatus, user_owner_key
from apps.sessions.selectors import SESSION_NOT_FOUND, SYSTEM, Principal, parse_session_id
from apps.sessions.services import labs, storage
from apps.sessions.services.transitions import session_transition, session_transitions_many
from apps.workers.models import Worker, WorkerStatus
from apps.workers.selectors import worker_placeable_list
from apps.core.sqltime import IsoDateTime
from apps.core.errors import NotFound, QueueFull, ValidationFailed

log = logging.getLogger(__name__)

TOUCH_RESOLUTION = timedelta(seconds=1)  # a poll refreshes last_seen_at at most once a second
AVERAGE_WEIGHT = 0.2  # weight of the newest duration in the pool's moving average


# --- pools -------------------------------------------------------------------------------------------

def pool_get_or_create(*, name: str | None = None) -> SessionPool:
    """The pool by name (default: settings.SESSION_DEFAULT_POOL). A pool that does not exist yet is
    created when it is the default or some worker names it; any other name is 422."""
    name = (name or settings.SESSION_DEFAULT_POOL).strip()
    pool = SessionPool.objects.filter(name=name).first()
    if pool is not None:
        return pool
    if name != settings.SESSION_DEFAULT_POOL and not Worker.objects.filter(session_pool=name).exists():
        raise ValidationFailed(f"Unknown session pool {name[:50]!r}.", errors={"pool": ["Unknown session pool."]})
    pool, _ = SessionPool.objects.get_or_create(name=name)
    return pool


# Advisory lock class of the pools' queue locks (two-int form: apart from the bigint keys of the audit
# chain and the scheduler): "LQ".
QUEUE_LOCK_CLASS = 0x4C51
TICKET_SEQUENCE = "lab_sessions_ticket_seq"  # migration 0006


def _queue_lock(pool_id: int, *, exclusive: bool) -> None:
    """The pool's queue lock until the transaction ends (PostgreSQL): shared by the inserts of new
    sessions, exclusive for a promotion, which so waits for the inserts in flight."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", [QUEUE_LOCK_CLASS, pool_id])


def _pools_locked(pool_ids=None) -> dict[int, SessionPool]:
    """Lock the pools' rows and their queues (exclusive), in pk order. FOR NO KEY UPDATE: the inserts of new
    sessions check their foreign key to the pool with FOR KEY SHARE, which FOR UPDATE would block (while
    they hold the queue lock this waits for: a deadlock)."""
    qs = SessionPool.objects.select_for_update(no_key=True).order_by("pk")
    if pool_ids is not None:
        qs = qs.filter(pk__in=list(pool_ids))
    pools = {pool.pk: pool for pool in qs}
    for pool_id in pools:
        _queue_lock(pool_id, exclusive=True)
    return pools


def _take_ticket(pool_id: int) -> int:
    """The next arrival number: from one sequence on PostgreSQL (no lock, no row), from the pool's counter
    on SQLite (whose writers are serialised anyway)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT nextval(%s)", [TICKET_SEQUENCE])
            return cursor.fetchone()[0]
    SessionPool.objects.filter(pk=pool_id).update(next_ticket=F("next_ticket") + 1)
    return SessionPool.objects.filter(pk=pool_id).values_list("next_ticket", flat=True).get() - 1


def _waiting_count(pool_id: int) -> int:
    """Waiting sessions of the pool (an index-only count of the live queue)."""
    return Session.objects.filter(pool_id=pool_id, status=SessionStatus.WAITING).count()


def _retry_after(pool: SessionPool) -> int:
    """Seconds until a place in a full queue is likely to free up: 5..300, 30 without history."""
    if not pool.avg_session_seconds:
        return 30
    return int(min(max(pool.avg_session_seconds / max(pool.usable_workers, 1), 5), 300))


def _record_durations(pool: SessionPool, seconds: list[float]) -> None:
    """Fold finished active periods into the pool's moving average (the wait estimate's basis)."""
    if not seconds:
        return
    average = pool.avg_session_seconds
    for value in seconds:
        average = value if average is None else (1 - AVERAGE_WEIGHT) * average + AVERAGE_WEIGHT * value
    pool.avg_session_seconds = average
    SessionPool.objects.filter(pk=pool.pk).update(avg_session_seconds=average,
                                                  sessions_finished=F("sessions_finished") + len(seconds))


def _free_workers(pool: SessionPool) -> list[int]:
    """Usable workers of the pool (running, not draining, CML available) that no active session holds."""
    held = Session.objects.filter(status=SessionStatus.ACTIVE, worker__isnull=False).values("worker_id")
    return list(worker_placeable_list().filter(session_pool=pool.name).exclude(pk__in=held)
                .order_by("pk").values_list("pk", flat=True))


def _promote(pool: SessionPool, *, now, actor: str) -> list:
    """Give free workers to the head of the queue (the lowest tickets). The pool must be locked
    (_pools_locked: its row and its queue)."""
    free = _free_workers(pool)
    if not free:
        return []
    heads = list(Session.objects.filter(pool=pool, status=SessionStatus.WAITING)
                 .order_by("ticket").values_list("pk", flat=True)[:len(free)])
    if not heads:
        return []
    # The workers handed out are locked (FOR NO KEY UPDATE) and read again: one that an idle stop just moved to
    # stopping is not handed out. SKIP LOCKED: a worker another transaction holds (an idle stop deciding, a lab
    # start on it: worker row, then lab slot) is left for the next promotion, never waited for, since this
    # transaction may hold that slot already (ending a session drops its claims) and waiting could deadlock.
    names = dict(Worker.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
                 .filter(pk__in=free[:len(heads)], status=WorkerStatus.RUNNING, draining=False)
                 .order_by("pk").values_list("pk", "public_id"))
    free = [worker_id for worker_id in free if worker_id in names]
    heads = heads[:len(free)]
    if not heads:
        return []
    # last_seen_at restarts: the client gets the whole active timeout to notice its promotion.
    moves = [(session_id, {"worker_id": worker_id, "activated_at": now, "last_seen_at": now},
              {"pool": pool.name, "worker_id": names[worker_id]}) for session_id, worker_id in zip(heads, free)]
    session_transitions_many(moves=moves, source=SessionStatus.WAITING, to=SessionStatus.ACTIVE, actor=actor)
    return heads


# --- one session --------------------------------------------------------------------------------------

def session_create(*, principal: Principal, pool_name: str | None = None, client_ip: str | None = None) -> Session:
    """Append a session to the pool's queue; if nobody waits and a worker is free it is active at once.

    The insert holds the pool's queue lock shared (see the module's docstring): creations do not wait for
    each other. Only a session that finds nobody waiting ahead and a free worker goes on to a promotion,
    under the pool's locks. A full queue (settings.SESSION_QUEUE_MAX waiting; concurrent creations may
    each see the last place free, so it can be passed by the requests in flight) is QueueFull: 503 with
    Retry-After. The position answered counts the sessions ahead that had committed."""
    pool = pool_get_or_create(name=pool_name)
    with transaction.atomic():
        _queue_lock(pool.pk, exclusive=False)
        ahead = _waiting_count(pool.pk)
        if settings.SESSION_QUEUE_MAX and ahead >= settings.SESSION_QUEUE_MAX:
            raise QueueFull(f"The queue of pool {pool.name!r} is full ({ahead} sessions waiting); retry later.",
                            retry_after=_retry_after(pool), extra={"pool": pool.name, "queue_length": ahead})
        now = timezone.now()
        session = Session.objects.create(pool=pool, ticket=_take_ticket(pool.pk), owner_id=principal.user_id,
                                         owner_key=user_owner_key(principal.user_id) if principal.user_id else "",
                                         actor=principal.actor, client_ip=client_ip, created_at=now, last_seen_at=now)
        session.position = ahead + 1
        audit_record(event_type="session.created", actor=principal.actor, resource_type="session",
                     resource_id=str(session.pk), action="session.created",
                     metadata={"pool": pool.name, "position": session.position})
    if ahead == 0:  # at the head: hand out a free worker; or another creation's promotion served it already
        if _free_workers(pool):
            with transaction.atomic():
                pool = _pools_locked([pool.pk])[pool.pk]
                _promote(pool, now=timezone.now(), actor=principal.actor)
        session.refresh_from_db(fields=["status", "worker", "activated_at", "last_seen_at"])
        session.position = None  # counted again if still waiting
    return session


def session_heartbeat(*, session_id, principal: Principal) -> None:
    """Keep a waiting or active session alive: one indexed UPDATE. Unknown (or not yours): NotFound."""
    touched = (Session.objects.filter(pk=parse_session_id(session_id), status__in=LIVE).filter(principal.visible())
               .update(last_seen_at=timezone.now()))
    if not touched:
        raise NotFound(SESSION_NOT_FOUND)


def session_touch(*, session: Session) -> None:
    """A poll or a /lab call counts as a sign of life (written at most once a second)."""
    now = timezone.now()
    if now - session.last_seen_at < TOUCH_RESOLUTION:
        return
    Session.objects.filter(pk=session.pk, status__in=LIVE).update(last_seen_at=now)
    session.last_seen_at = now


def session_end(*, session_id, principal: Principal, reason: str = "ended by the client") -> None:
    """End a waiting or active session: the ones behind move up; an active one drops its lab claim (the
    lab stays for whoever else holds it) and its worker goes to the head of the queue."""
    session_id = parse_session_id(session_id)
    pool_id = (Session.objects.filter(pk=session_id, status__in=LIVE).filter(principal.visible())
               .values_list("pool_id", flat=True).first())
    if pool_id is None:
        raise NotFound(SESSION_NOT_FOUND)
    with transaction.atomic():
        pool = _pools_locked([pool_id])[pool_id]
        session = Session.objects.filter(pk=session_id, status__in=LIVE).first()  # as of now, under the lock
        if session is None:
            raise NotFound(SESSION_NOT_FOUND)
        now = timezone.now()
        session_transition(session_id=session.pk, source=session.status, to=SessionStatus.ENDED, actor=principal.actor,
                           metadata={"pool": pool.name, "from": session.status, "reason": reason[:100]},
                           ended_at=now, end_reason=reason[:100])
        if session.status == SessionStatus.ACTIVE:
            labs.claims_drop(session_ids=[session.pk], worker_ids=[session.worker_id], actor=principal.actor)
            _record_durations(pool, [(now - session.activated_at).total_seconds()])
            _promote(pool, now=now, actor=principal.actor)
    storage.session_files_remove([session.pk])


def sessions_end_of_deleted_user(*, user_id: int, actor: str, reason: str) -> list:
    """A user is being deleted (in that deletion's transaction): end the user's live sessions, as
    DELETE /session would (journalled `session.ended`, claims dropped, the next sessions promoted), and tear
    down the labs of the user's (nobody may use them any more). The sessions keep their owner_key, so they
    never become anonymous when the owner column is set NULL. Returns the ids of the sessions ended."""
    key = user_owner_key(user_id)
    live = Session.objects.filter(owner_key=key, status__in=LIVE)  # a scan (no index by owner): rare
    pool_ids = set(live.values_list("pool_id", flat=True))
    now = timezone.now()
    with transaction.atomic():
        pools = _pools_locked(pool_ids) if pool_ids else {}
        rows = list(live.values_list("pk", "pool_id", "status", "worker_id", "activated_at"))  # as of now
        ended = []
        for source in (SessionStatus.WAITING, SessionStatus.ACTIVE):
            moves = [(pk, {"ended_at": now, "end_reason": reason[:100]},
                      {"pool": pools[pool_id].name, "from": source, "reason": reason[:100]})
                     for pk, pool_id, status, _, _ in rows if status == source]
            if moves:
                ended += session_transitions_many(moves=moves, source=source, to=SessionStatus.ENDED, actor=actor)
        active = [row for row in rows if row[2] == SessionStatus.ACTIVE and row[0] in ended]
        workers = [row[3] for row in active if row[3] is not None]
        # The slots in one pk order: those of the active sessions' workers and every lab of the user's.
        list(SessionLab.objects.select_for_update().filter(Q(worker_id__in=workers) | Q(owner_key=key)).order_by("pk"))
        if active:
            labs.claims_drop(session_ids=[row[0] for row in active], worker_ids=workers, actor=actor)
        labs.labs_drop_owned(owner_keys=[key], actor=actor, reason=reason[:100])
        for pool_id, pool in pools.items():
            _record_durations(pool, [(now - row[4]).total_seconds() for row in active if row[1] == pool_id])
            _promote(pool, now=now, actor=actor)
        transaction.on_commit(lambda: storage.session_files_remove(ended))
    return ended


# --- reaping and promotion ------------------------------------------------------------------------------

def _uuid_text(field: str):
    """A UUID key as text, as str(uuid) writes it: PostgreSQL casts its uuid; SQLite stores 32 hex digits,
    which get their hyphens back (8-4-4-4-12)."""
    if connection.vendor == "postgresql":
        return Cast(field, CharField())
    parts = [Substr(field, start, length) for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))]
    pieces = [parts[0]]
    for part in parts[1:]:
        pieces += [Value("-"), part]
    return Concat(*pieces, output_field=CharField())


def stale_sessions(*, now, pool_ids) -> QuerySet[Session]:
    """The sessions of these pools not heard from for SESSION_WAITING_STALE_SECONDS (waiting) or
    SESSION_ACTIVE_STALE_SECONDS (active), as of `now`: what a reaping pass takes."""
    stale = (Q(status=SessionStatus.WAITING, last_seen_at__lt=now - timedelta(seconds=settings.SESSION_WAITING_STALE_SECONDS))
             | Q(status=SessionStatus.ACTIVE, last_seen_at__lt=now - timedelta(seconds=settings.SESSION_ACTIVE_STALE_SECONDS)))
    return Session.objects.filter(stale, pool_id__in=list(pool_ids)).order_by()


def delete_statement(sessions: QuerySet[Session]) -> tuple[str, tuple]:
    """(sql, params) of a DELETE of `sessions` (no cascade: what refers to them is dropped first)."""
    return sessions.query.chain(DeleteQuery).get_compiler(sessions.db).as_sql()


def _reap_and_journal(candidates, pools: dict, actor: str) -> int:
    """Delete the stale sessions `candidates` and journal each as `session.reaped` (its pool, its former
    state, when it was last heard from); returns how many. A reaped session's row goes: its story is in
    the journal (`session.created`, `session.activated`, `session.reaped`), and a DELETE writes no index
    entry, where marking 100,000 rows REAPED wrote a new row version into every index (docs/performance.md).

    PostgreSQL: one statement, the journal's INSERT ... SELECT reading the rows the DELETE returns (a
    session a heartbeat revived in between is neither deleted nor journalled). SQLite: the INSERT ...
    SELECT, then the DELETE; SQLite has one writer at a time, so nothing changes between the two."""
    journal = {
        "event_type": "session.reaped", "actor": actor, "resource_type": "session", "action": "session.reaped",
        "resource_id": _uuid_text("pk"),
        "metadata": JSONObject(**{
            "pool": Case(*[When(pool_id=pk, then=Value(pool.name)) for pk, pool in pools.items()]),
            "from": Case(When(activated_at__isnull=True, then=Value("waiting")), default=Value("active")),
            "last_seen_at": IsoDateTime("last_seen_at")}),
    }
    delete_sql, delete_params = delete_statement(candidates)
    # In key order: the journal's resource_id index takes sorted keys faster than random ones.
    if connection.vendor == "postgresql":
        return audit_record_select(rows=Session.objects.order_by("pk"),
                                   with_clause=(f"{delete_sql} RETURNING *", delete_params), **journal)
    journalled = audit_record_select(rows=candidates.order_by("pk"), **journal)
    with connection.cursor() as cursor:
        cursor.execute(delete_sql, delete_params)
        if cursor.rowcount != journalled:  # cannot happen with one writer; never leave them unjournalled
            raise RuntimeError(f"reaping journalled {journalled} sessions and deleted {cursor.rowcount}")
    return journalled


def sessions_reap(*, pool_ids=None, actor: str = SYSTEM.actor) -> dict:
    """One maintenance pass over the pools (all, or `pool_ids`), in bulk statements:

    - sessions not heard from for SESSION_WAITING_STALE_SECONDS (waiting) or SESSION_ACTIVE_STALE_SECONDS
      (active) are reaped: deleted and journalled (`session.reaped`) by one statement
      (_reap_and_journal); only the active ones, at most one per worker, are read into Python, first;
    - reaped active sessions drop their lab claims; the queues are renumbered;
    - free usable workers go to the heads of the queues (also workers that became usable since).
    Returns counts: reaped_waiting, reaped_active, promoted."""
    now = timezone.now()
    counts = {"reaped_waiting": 0, "reaped_active": 0, "promoted": 0}
    reaped_active_ids = []
    with transaction.atomic():
        pools = _pools_locked(pool_ids)
        candidates = stale_sessions(now=now, pool_ids=pools)
        # The active ones (claims, workers, durations), read and locked before the reaping: a heartbeat
        # racing in cannot revive one in between. New active sessions only come from a promotion, under
        # the pools' locks held here.
        durations: dict[int, list[float]] = {}
        active_workers = []
        for pk, pool_id, worker_id, activated_at, last_seen_at in (
                candidates.filter(status=SessionStatus.ACTIVE).select_for_update()
                .values_list("pk", "pool_id", "worker_id", "activated_at", "last_seen_at")):
            reaped_active_ids.append(pk)
            active_workers.append(worker_id)
            durations.setdefault(pool_id, []).append(max((last_seen_at - activated_at).total_seconds(), 0))
        if reaped_active_ids:  # first: a claim refers to its session's row
            labs.claims_drop(session_ids=reaped_active_ids, worker_ids=active_workers, actor=actor)
        reaped = _reap_and_journal(candidates, pools, actor) if pools else 0  # no pool yet: nothing to reap
        counts["reaped_active"] = len(reaped_active_ids)
        counts["reaped_waiting"] = reaped - len(reaped_active_ids)
        for pool_id, seconds in durations.items():
            _record_durations(pools[pool_id], seconds)
        for pool in pools.values():
            counts["promoted"] += len(_promote(pool, now=now, actor=actor))
            usable = worker_placeable_list().filter(session_pool=pool.name).count()
            SessionPool.objects.filter(pk=pool.pk).update(usable_workers=usable, maintained_at=now)
    if reaped_active_ids:
        storage.session_files_remove(reaped_active_ids)
    if any(counts.values()):
        log.info("Session maintenance: %s", counts)
    return counts


def pool_maintain_if_due(*, pool: SessionPool) -> bool:
    """Reap and promote the pool when a read finds it was not done for SESSION_SWEEP_INTERVAL_SECONDS.
    One compare-and-swap UPDATE elects a single request to do it; True if this one did."""
    now = timezone.now()
    due = now - timedelta(seconds=settings.SESSION_SWEEP_INTERVAL_SECONDS)
    if pool.maintained_at is not None and pool.maintained_at > due:
        return False
    claimed = (SessionPool.objects.filter(pk=pool.pk).filter(Q(maintained_at__isnull=True) | Q(maintained_at__lte=due))
               .update(maintained_at=now))
    if not claimed:
        return False
    sessions_reap(pool_ids=[pool.pk])
    return True


def sessions_purge(*, days: int | None = None) -> int:
    """Delete ended and reaped sessions older than SESSION_HISTORY_DAYS (their audit rows stay)."""
    days = settings.SESSION_HISTORY_DAYS if days is None else days
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Session.objects.filter(status__in=[SessionStatus.ENDED, SessionStatus.REAPED],
                                        ended_at__lt=cutoff).delete()
    return deleted
