"""The fleet planner's decision: what the demand over the horizon needs that the fleet cannot hold, and which
workers nobody needs (docs/workers.md#the-planner). Reads only; apps.fleet.services acts on the plan.

Demand, from now to now + FLEET_PLAN_HORIZON_HOURS:
- what the capacity ledger holds (apps.workers.ledger: lablet instances by slot, session labs, warm labs);
- PENDING lablet instances (bookings and reservations no worker has room for yet);
- warm-pool labs not yet booted (each pool's target less what it holds: apps.lablets.services.warm);
- remote-lab pools with waiting sessions and no worker at all (a pool worker is a whole worker);
- scalable templates with fewer live workers than their `min_workers` (the minimum fleet they keep).
Capacity: every worker not terminated, failed or draining: running, stopped (startable: starting them is
apps.fleet.power's job) and launching (pending).

The pending demand is placed, in the scheduler's order, with placement's Planner over the real workers; what
does not fit is placed over virtual workers of the scalable templates (best fit across templates). Each
virtual worker used is a launch, due when its first slot starts minus the template's measured boot time and
LIFECYCLE_LEAD_MINUTES. Launches are checked against the limits (FLEET_MAX_WORKERS, FLEET_MAX_COST_PER_DAY,
the template's max_workers and max_cost_per_day) in due order: one that would pass a limit is a hold.
A stopped worker of a scalable template, stopped for FLEET_TERMINATE_UNNEEDED_HOURS, with nothing in the
ledger from now on, no instance on it, no session pool waiting for it and no part in the plan, is to be
terminated, as long as the fleet stays above FLEET_MIN_WORKERS and the template above its min_workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.placement import Planner, WorkerView, need_of
from apps.lablets.services.warm import warm_pool_targets
from apps.sessions.models import Session, SessionStatus
from apps.workers.ledger import DIMENSIONS, OPEN_END, bookings, capacity_of
from apps.workers.models import Worker, WorkerStatus, WorkerTemplate

# Workers that count against the limits (they exist, or may run at any moment).
LIVE_STATUSES = (WorkerStatus.PENDING, WorkerStatus.RUNNING, WorkerStatus.STOPPING, WorkerStatus.STOPPED)
VIRTUAL_PK = 1 << 40  # virtual workers' pks start here (never a real row's)
MAX_VIRTUAL_PER_TEMPLATE = 500
PENDING_COLUMNS = ("public_id", "timeslot_start", "timeslot_end", "cpu_cores", "memory_gb", "storage_gb",
                   "node_count", "port_count")
WORKER_COLUMNS = ("pk", "public_id", "name", "status", "draining", "cml_service_status", "license_status",
                  "license_tier", "aws_instance_id", "cpu_cores", "memory_gb", "storage_gb", "max_nodes",
                  "template_id", "session_pool", "status_changed_at")


@dataclass
class Launch:
    """A worker of `template` the demand needs: due (to launch) at `due`, for `bookings` needs, the first
    starting at `first_start`. `pool`: the session pool it is for (then `bookings` is the waiting count)."""

    template: WorkerTemplate
    due: datetime
    first_start: datetime
    bookings: int
    need: list[int]
    pool: str = ""
    minimum: bool = False  # for the template's min_workers, not for demand
    held: str = ""  # the limit that holds it back, "" when it may go
    numbers: dict = field(default_factory=dict)

    def figures(self) -> dict:
        return {"template_id": self.template.public_id, "template": self.template.name,
                "instance_type": self.template.instance_type, "due": self.due.isoformat(),
                "first_slot_start": self.first_start.isoformat(), "bookings": self.bookings,
                "cpu_cores": self.need[0], "memory_gb": self.need[1],
                "cost_per_day": float(self.template.cost_per_hour * 24), **({"pool": self.pool} if self.pool else {}),
                **({"minimum": True} if self.minimum else {})}


@dataclass
class Plan:
    now: datetime
    horizon_end: datetime
    launches: list[Launch]  # due now or later, held or not
    terminations: list[dict]  # {"worker": row, "stopped_hours": .., ...}
    unfit: list[dict]  # demand no scalable template can ever hold
    figures: dict  # the numbers behind the plan (live workers, cost per day, demand)
    real_workers: list  # the rows the plan was made over
    pending: list  # (need, start, end) of the pending demand
    holdings: list  # ledger rows

    def due_now(self) -> list[Launch]:
        return [launch for launch in self.launches if not launch.held and launch.due <= self.now]

    def held(self) -> list[Launch]:
        return [launch for launch in self.launches if launch.held]


def boot_minutes(template: WorkerTemplate) -> float:
    """The template's measured boot time in minutes, else WORKER_BOOT_MINUTES."""
    if template.boot_seconds is not None:
        return template.boot_seconds / 60
    return float(settings.WORKER_BOOT_MINUTES)


def warm_pool_demand(now: datetime | None = None) -> list[tuple]:
    """Warm-pool labs still to be booted, as (need vector, count): each pool's target less the warm labs it
    already holds (those are in the ledger, starting or ready)."""
    return [(tuple(pool["need"]), pool["target"] - pool["pooled"])
            for pool in warm_pool_targets(now=now) if pool["target"] > pool["pooled"]]


def _usable(row: dict) -> bool:
    if row["status"] in (WorkerStatus.STOPPING, WorkerStatus.STOPPED):
        return bool(row["aws_instance_id"]) and settings.SCHEDULER_USE_STOPPED_WORKERS
    return row["status"] in LIVE_STATUSES


def _view(row: dict, *, placeable: bool) -> WorkerView:
    """The worker as the planner's simulation sees it: a stopped or launching worker counts as capacity it
    will have (tier 0), a failed one as none."""
    return WorkerView(pk=row["pk"], public_id=row["public_id"], name=row["name"],
                      status=WorkerStatus.RUNNING if placeable else WorkerStatus.FAILED,
                      draining=row["draining"], cml_service_status="available", license_status=row["license_status"],
                      license_tier=row["license_tier"], aws_instance_id=row["aws_instance_id"] or "-",
                      cpu_cores=row["cpu_cores"], memory_gb=row["memory_gb"], storage_gb=row["storage_gb"],
                      max_nodes=row["max_nodes"])


def _virtual(template: WorkerTemplate, index: int, pk: int) -> WorkerView:
    return WorkerView(pk=pk, public_id=f"virtual-{template.public_id}-{index}", name=f"{template.name} #{index}",
                      status=WorkerStatus.RUNNING, draining=False, cml_service_status="available",
                      license_status="virtual", license_tier=template.license_tier, aws_instance_id="virtual",
                      cpu_cores=template.cpu_cores, memory_gb=template.memory_gb, storage_gb=template.storage_gb,
                      max_nodes=template.max_nodes)


def _pending_demand(now: datetime, end: datetime) -> list[tuple]:
    """(need, start, end, label) of PENDING instances overlapping [now, end), in the scheduler's order."""
    rows = (LabletInstance.objects.filter(status=InstanceStatus.PENDING, timeslot_end__gt=now,
                                          timeslot_start__lt=end)
            .order_by("-priority", "created_at", "pk").values_list(*PENDING_COLUMNS))
    return [(need_of(dict(zip(PENDING_COLUMNS[3:], row[3:]))), max(row[1], now), row[2],
             f"instance {row[0]} from {row[1]:%Y-%m-%d %H:%M} UTC") for row in rows]


def _virtual_bound(template: WorkerTemplate, unplaced: list[tuple]) -> int:
    """How many virtual workers of `template` the unplaced demand could ever need (an upper bound: twice the
    per-dimension sum over the template's capacity, plus one), capped."""
    capacity = capacity_of(template)
    worst = 1
    for d in range(4):
        if capacity[d]:
            worst = max(worst, math.ceil(2 * sum(item[0][d] for item in unplaced) / capacity[d]) + 1)
    return min(worst, len(unplaced), MAX_VIRTUAL_PER_TEMPLATE)


def _waiting_pools() -> dict[str, int]:
    """Session pools with waiting sessions: {pool name: waiting count}."""
    rows = (Session.objects.filter(status=SessionStatus.WAITING).values("pool__name")
            .annotate(n=Count("id")).values_list("pool__name", "n"))
    return dict(rows)


def _stopped_hours(row: dict, now: datetime) -> float:
    since = row["status_changed_at"]
    return (now - since).total_seconds() / 3600 if since else 0.0


def plan_fleet(*, now: datetime, horizon_hours: int | None = None) -> Plan:
    """The planner's decision over the fleet as it is (see the module's docstring). No writes."""
    horizon_end = now + timedelta(hours=horizon_hours or settings.FLEET_PLAN_HORIZON_HOURS)
    templates = {t.pk: t for t in WorkerTemplate.objects.all()}
    scalable = sorted((t for t in templates.values() if t.scalable), key=lambda t: (t.cost_per_hour, t.pk))
    rows = [dict(zip(WORKER_COLUMNS, values)) for values in
            Worker.objects.exclude(status=WorkerStatus.TERMINATED).order_by("pk").values_list(*WORKER_COLUMNS)]
    live = [row for row in rows if row["status"] in LIVE_STATUSES]
    # Capacity the scheduler can use: a stopped worker only with an EC2 instance to start and while the scheduler
    # places on stopped workers (SCHEDULER_USE_STOPPED_WORKERS); a launching or running one whatever its CML says
    # yet (it is booting).
    views = [_view(row, placeable=_usable(row)) for row in rows]
    pending = _pending_demand(now, horizon_end)
    # The ledger up to the end of the last pending slot (a slot may run past the horizon).
    read_until = max([horizon_end, *(item[2] for item in pending)])
    for need, count in warm_pool_demand():
        pending.extend((need, now, OPEN_END, "warm pool") for _ in range(count))
    holdings = bookings([row["pk"] for row in rows], now, read_until)
    real = Planner(views, holdings, policy=settings.SCHEDULER_POLICY)
    unplaced = []
    for need, start, end, label in pending:
        choice = real.choose(need, start, end)
        if choice is None:
            unplaced.append((need, start, end, label))
        else:
            real.book(choice.worker.pk, need, start, end)

    # What does not fit: over virtual workers of the scalable templates.
    launches: list[Launch] = []
    unfit: list[dict] = []
    if unplaced and scalable:
        virtual_views, owner = [], {}
        for template in scalable:
            for index in range(1, _virtual_bound(template, unplaced) + 1):
                pk = VIRTUAL_PK + len(virtual_views)
                virtual_views.append(_virtual(template, index, pk))
                owner[pk] = template
        simulated = Planner(virtual_views, [], policy="best_fit")
        used: dict[int, Launch] = {}
        for need, start, end, label in unplaced:
            choice = simulated.choose(need, start, end)
            if choice is None:
                unfit.append({"what": label, "need": list(need[:4])})
                continue
            pk = choice.worker.pk
            simulated.book(pk, need, start, end)
            template = owner[pk]
            launch = used.get(pk)
            if launch is None:
                launch = used[pk] = Launch(template=template, due=start, first_start=start, bookings=0,
                                           need=[0] * 4)
            launch.bookings += 1
            launch.first_start = min(launch.first_start, start)
            for d in range(4):
                launch.need[d] += need[d]
        for launch in used.values():
            lead = timedelta(minutes=boot_minutes(launch.template) + settings.LIFECYCLE_LEAD_MINUTES)
            launch.due = launch.first_start - lead
        launches.extend(used.values())
    elif unplaced:
        unfit.extend({"what": label, "need": list(need[:4])} for need, start, end, label in unplaced)

    # Session pools waiting with no worker at all: a worker of the cheapest scalable template each.
    pool_workers = {row["session_pool"] for row in live if row["session_pool"]}
    for pool, waiting in sorted(_waiting_pools().items()):
        if pool in pool_workers:
            continue  # a running one is busy, a stopped one apps.fleet.power starts
        if scalable:
            launches.append(Launch(template=scalable[0], due=now, first_start=now, bookings=waiting,
                                   need=[0] * 4, pool=pool))
        else:
            unfit.append({"what": f"session pool {pool}", "need": [], "waiting": waiting})

    # A scalable template below its min_workers: the missing ones, now.
    for template in scalable:
        have = sum(1 for row in live if row["template_id"] == template.pk)
        launches.extend(Launch(template=template, due=now, first_start=now, bookings=0, need=[0] * 4, minimum=True)
                        for _ in range(template.min_workers - have))

    figures = _apply_limits(launches, live, templates, now=now)
    figures["pending"] = len(pending)
    figures["unplaced"] = len(unplaced)
    terminations = _unneeded(rows, live, templates, real, now=now, planned=len(figures["planned"]))
    return Plan(now=now, horizon_end=horizon_end, launches=launches, terminations=terminations, unfit=unfit,
                figures=figures, real_workers=rows, pending=pending, holdings=holdings)


def _cost_per_day(template: WorkerTemplate | None) -> Decimal:
    return (template.cost_per_hour * 24) if template is not None else Decimal(0)


def _apply_limits(launches: list[Launch], live: list[dict], templates: dict, *, now: datetime) -> dict:
    """Mark each launch that would pass a limit as held (in due order: the earliest need goes first); the
    others count against the limits for the ones after them. Returns the fleet's numbers."""
    count = len(live)
    cost = sum((_cost_per_day(templates.get(row["template_id"])) for row in live), Decimal(0))
    per_template = {pk: {"count": 0, "cost": Decimal(0)} for pk in templates}
    for row in live:
        if row["template_id"] in per_template:
            per_template[row["template_id"]]["count"] += 1
            per_template[row["template_id"]]["cost"] += _cost_per_day(templates[row["template_id"]])
    cap_cost = settings.FLEET_MAX_COST_PER_DAY
    planned = []
    for launch in sorted(launches, key=lambda item: (item.due, item.template.pk)):
        template, own = launch.template, per_template[launch.template.pk]
        add = _cost_per_day(template)
        numbers = {"live_workers": count, "max_workers": settings.FLEET_MAX_WORKERS,
                   "cost_per_day": float(cost), "max_cost_per_day": cap_cost,
                   "template_workers": own["count"], "template_max_workers": template.max_workers,
                   "template_cost_per_day": float(own["cost"]),
                   "template_max_cost_per_day": None if template.max_cost_per_day is None
                   else float(template.max_cost_per_day),
                   "launch_cost_per_day": float(add)}
        if count + 1 > settings.FLEET_MAX_WORKERS:
            launch.held = "FLEET_MAX_WORKERS"
        elif cap_cost is not None and float(cost + add) > cap_cost:
            launch.held = "FLEET_MAX_COST_PER_DAY"
        elif template.max_workers is not None and own["count"] + 1 > template.max_workers:
            launch.held = "max_workers"
        elif template.max_cost_per_day is not None and own["cost"] + add > template.max_cost_per_day:
            launch.held = "max_cost_per_day"
        launch.numbers = numbers
        if launch.held:
            continue
        count += 1
        cost += add
        own["count"] += 1
        own["cost"] += add
        planned.append(launch)
    return {"live_workers": len(live), "max_workers": settings.FLEET_MAX_WORKERS,
            "cost_per_day": float(sum((_cost_per_day(templates.get(r["template_id"])) for r in live), Decimal(0))),
            "max_cost_per_day": cap_cost, "planned": planned, "planned_cost_per_day": float(cost)}


def _unneeded(rows: list[dict], live: list[dict], templates: dict, real: Planner, *, now: datetime,
              planned: int) -> list[dict]:
    """Stopped workers of scalable templates to terminate (oldest stop first), never one with booked work,
    never below the minimum fleet."""
    hours = settings.FLEET_TERMINATE_UNNEEDED_HOURS
    if not hours or hours <= 0:
        return []
    candidates = [row for row in rows if row["status"] == WorkerStatus.STOPPED and row["aws_instance_id"]
                  and row["template_id"] in templates and templates[row["template_id"]].scalable
                  and _stopped_hours(row, now) >= hours and real.version.get(row["pk"], 0) == 0]
    if not candidates:
        return []
    ids = [row["pk"] for row in candidates]
    booked = {row[0] for row in bookings(ids, now, OPEN_END)}
    with_instances = set(LabletInstance.objects.filter(worker_id__in=ids).exclude(
        status=InstanceStatus.TERMINATED).values_list("worker_id", flat=True).distinct())
    waiting = _waiting_pools()
    remaining = len(live)
    per_template = {}
    for row in live:
        per_template[row["template_id"]] = per_template.get(row["template_id"], 0) + 1
    out = []
    for row in sorted(candidates, key=lambda r: (r["status_changed_at"], r["pk"])):
        template = templates[row["template_id"]]
        if row["pk"] in booked or row["pk"] in with_instances:
            continue
        if row["session_pool"] and waiting.get(row["session_pool"]):
            continue
        if remaining - 1 < settings.FLEET_MIN_WORKERS or per_template[template.pk] - 1 < template.min_workers:
            continue
        remaining -= 1
        per_template[template.pk] -= 1
        out.append({"worker": row, "template": template, "stopped_hours": round(_stopped_hours(row, now), 1),
                    "live_workers": remaining + 1, "min_workers": settings.FLEET_MIN_WORKERS,
                    "template_min_workers": template.min_workers})
    return out
