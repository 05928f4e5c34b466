"""Workers' power by demand: stop the workers that hold nothing, start stopped ones ahead of booked lablet slots
and for session pools whose queue waits with no worker up (docs/workers.md#capacity-and-scaling).

It sees both kinds of demand (lablet bookings and remote-lab sessions), so it lives in apps.fleet, above
apps.lablets and apps.sessions. What a worker holds comes from the capacity ledger (apps.workers.ledger).

The stop and start go through `worker_stop_decided` (the decision moves the worker to STOPPING in its own transaction) / `worker_start` (EC2 outside any transaction, audited); a worker
whose EC2 call fails is logged and skipped, so one bad worker never breaks the job. Each decision is audited
first (`worker.idle_stop`, reason "idle"; `worker.demand_start`, reason "demand" for a booked slot, "session
pool <name>: N waiting" for a pool's queue). The running/booked-hours report stays in
apps.lablets.services.fleet_cost.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, Max, OuterRef, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.sessions.models import LabStatus, Session, SessionLab, SessionStatus
from apps.workers import ledger
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services.fleet import worker_start, worker_stop_decided, worker_transition
from apps.core.errors import DomainError

log = logging.getLogger(__name__)

LAB_HOLDING = (LabStatus.STARTING, LabStatus.RUNNING)


# --- idle stop ------------------------------------------------------------------------------------


def _idle_workers(now: datetime):
    """Running, managed workers idle for WORKER_IDLE_STOP_MINUTES with nothing booked soon and no session.

    Idle since = the latest of the worker's last status change, the last stop/termination of an instance
    on it and the end of its last session. "Booked soon": an instance not yet terminated (live, or
    stopped/archived and still to be torn down on CML) whose slot starts before now + lead + max(idle
    period, boot time) — the boot time so that a worker stopped now is not due to be started again at once.
    A worker with an ACTIVE session or a session lab starting or running is never idle. A draining worker
    keeps running while any instance not yet terminated is on it. (What else the ledger holds on it, e.g. a
    warm lab, is checked under the worker's lock: `_claim_idle`.)
    """
    idle = settings.WORKER_IDLE_STOP_MINUTES
    cutoff = now - timedelta(minutes=idle)
    horizon = now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES + max(idle, settings.WORKER_BOOT_MINUTES))
    on_worker = LabletInstance.objects.filter(worker=OuterRef("pk")).exclude(status=InstanceStatus.TERMINATED)
    ended_recently = LabletInstance.objects.filter(worker=OuterRef("pk")).filter(
        Q(terminated_at__gt=cutoff) | Q(stopped_at__gt=cutoff))
    sessions = Session.objects.filter(worker=OuterRef("pk"))
    labs = SessionLab.objects.filter(worker=OuterRef("pk"), status__in=LAB_HOLDING)
    return (
        Worker.objects.filter(status=WorkerStatus.RUNNING)
        .exclude(aws_instance_id="")
        .filter(Q(status_changed_at__lte=cutoff) | Q(status_changed_at__isnull=True, created_at__lte=cutoff))
        .filter(~Exists(on_worker.filter(timeslot_start__lt=horizon)))
        .filter(Q(draining=False) | ~Exists(on_worker))
        .filter(~Exists(ended_recently))
        .filter(~Exists(sessions.filter(status=SessionStatus.ACTIVE)))
        .filter(~Exists(sessions.filter(ended_at__gt=cutoff)))
        .filter(~Exists(labs))
    )


def _idle_since(worker: Worker) -> datetime:
    ended = worker.instances.aggregate(stopped=Max("stopped_at"), terminated=Max("terminated_at"))
    session = Session.objects.filter(worker=worker).aggregate(ended=Max("ended_at"))["ended"]
    return max(t for t in (worker.status_changed_at or worker.created_at, *ended.values(), session) if t is not None)


def _claim_idle(worker: Worker, *, now: datetime, actor: str) -> bool:
    """Check again, the worker row locked (placement and a session lab's start lock it too), the ledger
    included (nothing held at `now`, of any kind), and record the decision."""
    with transaction.atomic():
        locked = _idle_workers(now).select_for_update(of=("self",)).filter(pk=worker.pk).first()
        if locked is None:
            return False
        held = ledger.usage_at([locked.pk], now).get(locked.pk)
        if held:
            log.info("cost: worker %s is not idle: the ledger holds %s", locked.public_id, held)
            return False
        since = _idle_since(locked)
        audit_record(event_type="worker.idle_stop", actor=actor, resource_type="worker",
                     resource_id=locked.public_id, action="worker.idle_stop",
                     metadata={"reason": "idle", "idle_since": since.isoformat(),
                               "idle_minutes": int((now - since) / timedelta(minutes=1))})
        # Stopping from this commit on: no placement, session lab, warm lab or promotion lands on it meanwhile
        # (they lock the row, then see it stopping); EC2 is called after the commit.
        worker_transition(worker=locked, to=WorkerStatus.STOPPING, actor=actor, reason="idle stop requested")
    return True


def workers_stop_idle(*, actor: str = "system", now: datetime | None = None) -> list[str]:
    """Stop every running worker that has hosted nothing for WORKER_IDLE_STOP_MINUTES (0: never).
    Returns the public ids of the workers stopped."""
    if settings.WORKER_IDLE_STOP_MINUTES <= 0:
        return []
    now = now or timezone.now()
    stopped = []
    for worker in list(_idle_workers(now).order_by("pk")):
        if not _claim_idle(worker, now=now, actor=actor):
            continue
        worker.refresh_from_db()
        if _call(worker_stop_decided, worker=worker, actor=actor, verb="stop"):
            stopped.append(worker.public_id)
    return stopped


# --- start ahead of demand ------------------------------------------------------------------------


def _start(worker: Worker, *, actor: str, metadata: dict) -> bool:
    audit_record(event_type="worker.demand_start", actor=actor, resource_type="worker",
                 resource_id=worker.public_id, action="worker.demand_start", metadata=metadata)
    return _call(worker_start, worker=worker, actor=actor, verb="start")


def _start_for_bookings(*, actor: str, now: datetime) -> list[str]:
    """Every stopped, managed worker holding a SCHEDULED instance whose slot starts within
    LIFECYCLE_LEAD_MINUTES + WORKER_BOOT_MINUTES (so it is up when the lab is brought up)."""
    due = now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES + settings.WORKER_BOOT_MINUTES)
    demand = LabletInstance.objects.filter(
        worker=OuterRef("pk"), status=InstanceStatus.SCHEDULED, timeslot_start__lte=due, timeslot_end__gt=now)
    started = []
    for worker in Worker.objects.filter(status=WorkerStatus.STOPPED).exclude(aws_instance_id="").filter(
        Exists(demand)
    ).order_by("pk"):
        first = (LabletInstance.objects.filter(worker=worker, status=InstanceStatus.SCHEDULED, timeslot_end__gt=now)
                 .order_by("timeslot_start").values("public_id", "timeslot_start").first())
        if _start(worker, actor=actor, metadata={
                "reason": "demand", "instance_id": first and first["public_id"],
                "timeslot_start": first and first["timeslot_start"].isoformat()}):
            started.append(worker.public_id)
    return started


def _start_for_pools(*, actor: str) -> list[str]:
    """For each session pool whose queue has WAITING sessions while none of its workers is running or
    pending (all stopped, or stopping): start one stopped, managed, undrained worker of the pool (the
    lowest pk). One at a time: once it runs, the queue moves and the next tick sees whether more wait."""
    waiting = dict(Session.objects.filter(status=SessionStatus.WAITING).order_by()
                   .values_list("pool__name").annotate(n=Count("pk")))
    started = []
    for name, count in sorted(waiting.items()):
        pool_workers = Worker.objects.filter(session_pool=name)
        if pool_workers.filter(status__in=(WorkerStatus.RUNNING, WorkerStatus.PENDING)).exists():
            continue
        worker = (pool_workers.filter(status=WorkerStatus.STOPPED, draining=False).exclude(aws_instance_id="")
                  .order_by("pk").first())
        if worker is None:
            continue
        if _start(worker, actor=actor, metadata={"reason": f"session pool {name}: {count} waiting", "pool": name,
                                                 "waiting": count}):
            started.append(worker.public_id)
    return started


def workers_start_for_demand(*, actor: str = "system", now: datetime | None = None) -> list[str]:
    """Start the stopped workers demand needs: those with a lablet slot due soon, and one per session pool
    whose waiting sessions have no worker up. Returns the public ids of the workers started."""
    now = now or timezone.now()
    started = _start_for_bookings(actor=actor, now=now)
    return started + [pk for pk in _start_for_pools(actor=actor) if pk not in started]


def _call(service, *, worker: Worker, actor: str, verb: str) -> bool:
    """Run worker_stop / worker_start; a refused or failed call is logged (and audited by the
    service) and the job goes on with the next worker."""
    try:
        service(worker=worker, actor=actor)
    except DomainError as exc:
        log.warning("cost: could not %s worker %s: %s", verb, worker.public_id, exc.detail)
        return False
    except Exception:
        log.exception("cost: could not %s worker %s", verb, worker.public_id)
        return False
    return True


def worker_cost_tick(*, actor: str = "system", now: datetime | None = None) -> dict:
    """The `worker_cost` schedule: start workers for demand, then stop idle ones. Never raises."""
    result = {}
    for key, job in (("started", workers_start_for_demand), ("stopped", workers_stop_idle)):
        try:
            result[key] = job(actor=actor, now=now)
        except Exception:
            log.exception("cost: %s failed", job.__name__)
            result[key] = []
    return result
