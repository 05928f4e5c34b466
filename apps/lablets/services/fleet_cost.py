"""The fleet's cost, driven by the bookings: stop workers that host nothing, start stopped ones ahead of booked
slots, report running and booked hours. It reads lablet instances and acts on workers, so it lives here,
above apps.workers (docs/architecture.md).

Running hours are `WorkerRunPeriod` rows, opened and closed by `worker_transition` (apps/workers/services/fleet.py).
The stop and start go through `worker_stop` / `worker_start` (EC2 outside any transaction, audited); a
worker whose EC2 call fails is logged and skipped, so one bad worker never breaks the job. Each decision
is audited first (`worker.idle_stop`, reason "idle"; `worker.demand_start`, reason "demand").
"""

import bisect
import logging
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.lablets.models import InstanceStatus, LabletInstance, WarmLab
from apps.workers.models import Worker, WorkerRunPeriod, WorkerStatus
from apps.workers.services.fleet import worker_start, worker_stop
from apps.core.errors import DomainError, ValidationFailed

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


# --- idle stop ------------------------------------------------------------------------------------


def _idle_workers(now: datetime):
    """Running, managed workers idle for WORKER_IDLE_STOP_MINUTES with nothing booked soon.

    Idle since = the latest of the worker's last status change and the last stop/termination of an
    instance on it. "Booked soon": an instance not yet terminated (live, or stopped/archived and still
    to be torn down on CML) whose slot starts before now + lead + max(idle period, boot time) — the
    boot time so that a worker stopped now is not due to be started again at once. A draining worker
    keeps running while any instance not yet terminated is on it.
    """
    idle = settings.WORKER_IDLE_STOP_MINUTES
    cutoff = now - timedelta(minutes=idle)
    horizon = now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES + max(idle, settings.WORKER_BOOT_MINUTES))
    on_worker = LabletInstance.objects.filter(worker=OuterRef("pk")).exclude(status=InstanceStatus.TERMINATED)
    ended_recently = LabletInstance.objects.filter(worker=OuterRef("pk")).filter(
        Q(terminated_at__gt=cutoff) | Q(stopped_at__gt=cutoff))
    return (
        Worker.objects.filter(status=WorkerStatus.RUNNING)
        .exclude(aws_instance_id="")
        .filter(Q(status_changed_at__lte=cutoff) | Q(status_changed_at__isnull=True, created_at__lte=cutoff))
        .filter(~Exists(on_worker.filter(timeslot_start__lt=horizon)))
        .filter(Q(draining=False) | ~Exists(on_worker))
        .filter(~Exists(ended_recently))
    )


def _idle_since(worker: Worker) -> datetime:
    ended = worker.instances.aggregate(stopped=Max("stopped_at"), terminated=Max("terminated_at"))
    return max(t for t in (worker.status_changed_at or worker.created_at, *ended.values()) if t is not None)


def _claim_idle(worker: Worker, *, now: datetime, actor: str) -> bool:
    """Check again, the worker row locked (placement locks it too), and record the decision."""
    with transaction.atomic():
        locked = _idle_workers(now).select_for_update(of=("self",)).filter(pk=worker.pk).first()
        if locked is None:
            return False
        since = _idle_since(locked)
        audit_record(event_type="worker.idle_stop", actor=actor, resource_type="worker",
                     resource_id=locked.public_id, action="worker.idle_stop",
                     metadata={"reason": "idle", "idle_since": since.isoformat(),
                               "idle_minutes": int((now - since) / timedelta(minutes=1))})
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
        if _call(worker_stop, worker=worker, actor=actor, verb="stop"):
            stopped.append(worker.public_id)
    return stopped


# --- start ahead of demand ------------------------------------------------------------------------


def workers_start_for_demand(*, actor: str = "system", now: datetime | None = None) -> list[str]:
    """Start every stopped, managed worker holding a SCHEDULED instance whose slot starts within
    LIFECYCLE_LEAD_MINUTES + WORKER_BOOT_MINUTES (so it is up when the lab is brought up).
    Returns the public ids of the workers started."""
    now = now or timezone.now()
    due = now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES + settings.WORKER_BOOT_MINUTES)
    demand = LabletInstance.objects.filter(
        worker=OuterRef("pk"), status=InstanceStatus.SCHEDULED, timeslot_start__lte=due, timeslot_end__gt=now)
    started = []
    for worker in Worker.objects.filter(status=WorkerStatus.STOPPED).exclude(aws_instance_id="").filter(
        Exists(demand)
    ).order_by("pk"):
        first = (LabletInstance.objects.filter(worker=worker, status=InstanceStatus.SCHEDULED, timeslot_end__gt=now)
                 .order_by("timeslot_start").values("public_id", "timeslot_start").first())
        audit_record(event_type="worker.demand_start", actor=actor, resource_type="worker",
                     resource_id=worker.public_id, action="worker.demand_start",
                     metadata={"reason": "demand", "instance_id": first and first["public_id"],
                               "timeslot_start": first and first["timeslot_start"].isoformat()})
        if _call(worker_start, worker=worker, actor=actor, verb="start"):
            started.append(worker.public_id)
    return started


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


# --- report ---------------------------------------------------------------------------------------


def _days(start: date, end: date) -> list[tuple[date, datetime]]:
    """(day, its start) for every day of [start, end] and the day after (the end bound), local time."""
    tz = timezone.get_current_timezone()
    count = (end - start).days + 2
    return [(start + timedelta(days=i), datetime.combine(start + timedelta(days=i), time.min, tzinfo=tz))
            for i in range(count)]


def _spread(totals: dict, key, begin: datetime, finish: datetime, bounds: list[datetime], weight: int = 1) -> None:
    """Add weight × the overlap of [begin, finish) with each day to totals[(key, day index)]."""
    if finish <= begin:
        return
    index = max(bisect.bisect_right(bounds, begin) - 1, 0)
    while index < len(bounds) - 1 and bounds[index] < finish:
        overlap = min(finish, bounds[index + 1]) - max(begin, bounds[index])
        if overlap > timedelta(0):
            totals[(key, index)] = totals.get((key, index), timedelta(0)) + overlap * weight
        index += 1


def _hours(span: timedelta) -> float:
    return span / HOUR


def fleet_report(*, start: date, end: date, now: datetime | None = None) -> list[dict]:
    """Per worker per day of [start, end] (local days, TIME_ZONE): running hours (WorkerRunPeriods
    clipped to the day, an open one up to now), booked instance-hours and CPU-hours (timeslots clipped
    to the day, cut short where the instance stopped or was terminated early), utilisation (booked
    CPU-hours over the worker's cores × running hours, in %, None without running hours) and cost
    (running hours × the template's cost_per_hour, None without a template). Warm pools
    (docs/workers.md#warm-pools): warm-lab hours (each warm lab from its placement until it was taken or
    recycled, clipped to the day) and their share of the cost (cost × the warm labs' CPU-hours over the
    worker's cores × running hours, at most the cost; None without a template). Days with neither running,
    booked nor warm time are left out. Four queries, whatever the fleet."""
    if end < start:
        raise ValidationFailed("The report's end date is before its start date.",
                               errors={"end": ["Must not be before start."]})
    now = now or timezone.now()
    days = _days(start, end)
    bounds = [moment for _, moment in days]
    lower, upper = bounds[0], bounds[-1]

    running: dict = {}
    for worker_pk, began, ended in WorkerRunPeriod.objects.filter(started_at__lt=upper).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=lower)
    ).values_list("worker_id", "started_at", "ended_at"):
        _spread(running, worker_pk, began, ended or now, bounds)

    booked: dict = {}
    booked_cpu: dict = {}
    for row in LabletInstance.objects.filter(
        worker__isnull=False, timeslot_start__lt=upper, timeslot_end__gt=lower
    ).values("worker_id", "timeslot_start", "timeslot_end", "stopped_at", "terminated_at", "cpu_cores"):
        finish = min(t for t in (row["timeslot_end"], row["stopped_at"], row["terminated_at"]) if t is not None)
        _spread(booked, row["worker_id"], row["timeslot_start"], finish, bounds)
        _spread(booked_cpu, row["worker_id"], row["timeslot_start"], finish, bounds, weight=row["cpu_cores"])

    warm: dict = {}
    warm_cpu: dict = {}
    for worker_pk, began, ended, cores in WarmLab.objects.filter(created_at__lt=upper).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=lower)
    ).values_list("worker_id", "created_at", "ended_at", "cpu_cores"):
        _spread(warm, worker_pk, began, ended or now, bounds)
        _spread(warm_cpu, worker_pk, began, ended or now, bounds, weight=cores)

    keys = set(running) | set(booked) | set(warm)
    workers = Worker.objects.select_related("template").in_bulk({pk for pk, _ in keys})
    rows = []
    for pk, index in sorted(keys, key=lambda k: (workers[k[0]].name, workers[k[0]].public_id, k[1])):
        worker = workers[pk]
        ran = running.get((pk, index), timedelta(0))
        cpu = booked_cpu.get((pk, index), timedelta(0))
        capacity = ran * worker.cpu_cores
        cost = cost_of(ran, worker.template.cost_per_hour) if worker.template else None
        warm_share = min(1, warm_cpu.get((pk, index), timedelta(0)) / capacity) if capacity else 0
        rows.append({
            "date": days[index][0],
            "worker_id": worker.public_id,
            "worker_name": worker.name,
            "cpu_cores": worker.cpu_cores,
            "running_hours": _hours(ran),
            "booked_hours": _hours(booked.get((pk, index), timedelta(0))),
            "booked_cpu_hours": _hours(cpu),
            "utilisation_percent": 100 * (cpu / capacity) if capacity else None,
            "cost": cost,
            "warm_hours": _hours(warm.get((pk, index), timedelta(0))),
            "warm_cost": None if cost is None else (cost * Decimal(warm_share)).quantize(Decimal("0.0001")),
        })
    return rows


def cost_of(span: timedelta, per_hour: Decimal) -> Decimal:
    """Exact cost of `span` at `per_hour`, to 1/10,000 of the currency unit."""
    micros = span // timedelta(microseconds=1)
    return (Decimal(micros) * per_hour / Decimal(3_600_000_000)).quantize(Decimal("0.0001"))
