"""The fleet's cost report: running and booked hours per worker per day. It reads lablet instances, so it
lives here, above apps.workers (docs/architecture.md). Stopping idle workers and starting them for demand is
apps.fleet.power (it sees sessions too).

Running hours are `WorkerRunPeriod` rows, opened and closed by `worker_transition` (apps/workers/services/fleet.py).
Booked hours are history (terminated instances included, cut short where they ended), which the capacity
ledger (live holdings only) does not keep: they are read from the instances themselves.
"""

import bisect
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from apps.lablets.models import LabletInstance, WarmLab
from apps.workers.models import Worker, WorkerRunPeriod
from apps.core.errors import ValidationFailed

HOUR = timedelta(hours=1)


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
