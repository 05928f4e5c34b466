"""Reads of sessions, pools and labs. Each read of one session is one indexed row (no queue scan)."""

import math
import uuid
from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from apps.sessions.lifecycle import LIVE
from apps.sessions.models import LabStatus, Session, SessionLab, SessionPool, SessionStatus
from apps.core.errors import Locked, NotFound

SESSION_NOT_FOUND = "Session not found"  # the seed's messages, which its clients may match on
SESSION_NOT_ACTIVE = "Session is not active"
NO_LAB = "No lab running"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (API key or bearer token) or an anonymous client from an allowed network.

    Sessions belong to whoever created them. A privileged principal (admin or operator) sees every
    session; a user only their own; an anonymous caller only anonymous sessions, and only by their id
    (their only secret: what lists sessions, `session_active_first` and /debug/health, answers only the
    privileged). Anonymous callers come from SESSION_ANONYMOUS_NETWORKS: the permission (RemoteLabAccess)
    refuses the others first."""

    user_id: int | None
    actor: str
    privileged: bool = False

    def visible(self) -> Q:
        if self.privileged:
            return Q()
        if self.user_id is None:
            return Q(owner_key="")  # not owner IS NULL: a deleted user's session stays the user's
        return Q(owner_id=self.user_id)

    def can_see(self, session: Session) -> bool:
        if self.privileged:
            return True
        if self.user_id is None:
            return session.owner_key == ""
        return session.owner_id == self.user_id


SYSTEM = Principal(user_id=None, actor="system", privileged=True)


def parse_session_id(value) -> uuid.UUID:
    """A session id from a path or the X-Session-ID header; anything that is not a UUID is unknown (404)."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value or "").strip())
    except ValueError:
        raise NotFound(SESSION_NOT_FOUND) from None


def session_get_live(*, session_id, principal: Principal) -> Session:
    """A waiting or active session the principal may see, else NotFound (404)."""
    # get(), not first(): first() orders by Meta.ordering ("pool" → the pool's name, a join), an ORDER BY
    # every poll would pay to build.
    try:
        # The worker only for an active session (a second, indexed read): most polls come from waiting
        # sessions, and joining the wide worker row makes the query costly to compile.
        session = Session.objects.select_related("pool").get(pk=parse_session_id(session_id), status__in=LIVE)
    except Session.DoesNotExist:
        raise NotFound(SESSION_NOT_FOUND) from None
    if not principal.can_see(session):
        raise NotFound(SESSION_NOT_FOUND)
    return session


def session_get_active(*, session_id, principal: Principal) -> Session:
    """The /lab/* gate: unknown → 404, not active → 423."""
    session = session_get_live(session_id=session_id, principal=principal)
    if session.status != SessionStatus.ACTIVE:
        raise Locked(SESSION_NOT_ACTIVE)
    return session


def with_positions(sessions: QuerySet[Session]) -> QuerySet[Session]:
    """`sessions` with their queue positions counted in the same query (Session.position reads them):
    for a list, instead of one count per waiting session."""
    ahead = (Session.objects.filter(pool_id=OuterRef("pool_id"), status=SessionStatus.WAITING,
                                    ticket__lt=OuterRef("ticket"))
             .order_by().values("pool_id").annotate(n=Count("pk")).values("n"))
    return sessions.annotate(queue_position=Coalesce(Subquery(ahead), 0) + 1)


def session_estimated_wait(session: Session) -> int | None:
    """Seconds until the session is likely active: its position over the pool's usable workers, times
    the recent mean time a session stays active. None until a session of the pool has finished."""
    if session.status == SessionStatus.ACTIVE:
        return 0
    pool = session.pool
    if pool.avg_session_seconds is None:
        return None
    rounds = math.ceil(session.position / max(pool.usable_workers, 1))
    return int(round(rounds * pool.avg_session_seconds))


def session_list(*, principal: Principal, pool: str | None = None, status: str | None = None) -> QuerySet[Session]:
    qs = Session.objects.select_related("pool", "worker").filter(principal.visible())
    if pool:
        qs = qs.filter(pool__name=pool)
    if status:
        qs = qs.filter(status=status)
    return qs


def session_active_first(*, principal: Principal, pool: str) -> Session | None:
    """The longest-active session of a pool (GET /active-session), for admins and operators only: to anyone
    else None, as when no session is active (an anonymous session's id is its only secret)."""
    if not principal.privileged:
        return None
    return (session_list(principal=principal, pool=pool, status=SessionStatus.ACTIVE)
            .order_by("activated_at", "ticket").first())


def pool_counts() -> list[dict]:
    """Per pool: waiting and active sessions (two indexed counts per pool), for /debug/health."""
    counts = {
        (row["pool_id"], row["status"]): row["n"]
        for row in Session.objects.filter(status__in=LIVE).values("pool_id", "status").annotate(n=Count("pk")).order_by()
    }
    return [
        {
            "name": pool.name,
            "waiting": counts.get((pool.pk, SessionStatus.WAITING), 0),
            "active": counts.get((pool.pk, SessionStatus.ACTIVE), 0),
            "usable_workers": pool.usable_workers,
            "avg_session_seconds": pool.avg_session_seconds,
        }
        for pool in SessionPool.objects.all()
    ]


def session_lab_is_its(*, session: Session, lab: SessionLab | None) -> bool:
    """Whether `lab` (a worker's slot, already read) is the session's: session_lab_of's rule, for lists that
    read the labs with their sessions (the dashboard's sessions page)."""
    return (lab is not None and session.worker_id is not None and lab.worker_id == session.worker_id
            and lab.status != LabStatus.EMPTY and lab.owner_key == session.lab_owner_key)


def session_lab_of(*, session: Session) -> SessionLab | None:
    """The lab of the session's worker, if it is the session's principal's (SessionLab.owner_key); None when
    nothing runs there for it: nothing ever ran, the slot is empty, or the lab there is another principal's
    (a lab outlives its session, for its principal's next one: never shown to anyone else)."""
    if session.worker_id is None:
        return None
    return (SessionLab.objects.filter(worker_id=session.worker_id, owner_key=session.lab_owner_key)
            .exclude(status=LabStatus.EMPTY).first())


def session_lab_running(*, session: Session) -> SessionLab:
    lab = session_lab_of(session=session)
    if lab is None or lab.status != LabStatus.RUNNING:
        raise NotFound(NO_LAB)
    return lab


def session_lab_bookings(worker_ids, start, end, *, exclude_pk=None) -> list[tuple]:
    """The capacity ledger's session-lab rows (the `worker_bookings` receiver of apps.sessions): the labs
    starting or running on these workers (None: all), held from `held_since` until they are torn down
    (OPEN_END). `start`/`end` narrow nothing but the start: an open-ended holding overlaps every later window."""
    from apps.workers.ledger import OPEN_END, SESSION_LAB

    qs = SessionLab.objects.filter(status__in=(LabStatus.STARTING, LabStatus.RUNNING))
    if worker_ids is not None:
        qs = qs.filter(worker_id__in=list(worker_ids))
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    qs = qs.filter(Q(held_since__isnull=True) | Q(held_since__lt=end))
    return [(worker_pk, since or start, OPEN_END, cpu, memory, storage, nodes, 0, SESSION_LAB)
            for worker_pk, since, cpu, memory, storage, nodes in qs.order_by().values_list(
                "worker_id", "held_since", "cpu_cores", "memory_gb", "storage_gb", "node_count")]
