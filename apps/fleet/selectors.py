"""What the fleet plan page shows (docs/dashboard.md#fleet-plan): demand against capacity over the next hours,
the planner's planned actions and its recent decisions from the journal. Reads only."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.fleet.planner import LIVE_STATUSES, boot_minutes, plan_fleet
from apps.fleet.services import DECISIONS, hold_reason, launch_reason
from apps.workers.models import WorkerStatus, WorkerTemplate

BUCKET_MINUTES = 30
RECENT_DECISIONS = 25
# The power job's decisions (apps.fleet.power): a stopped worker started for demand, an idle one stopped.
POWER_DECISIONS = ("worker.demand_start", "worker.idle_stop")


class _Series:
    """Sums per bucket: add(start, end, amount) counts `amount` in every bucket [start, end) overlaps (so a
    bucket shows the most that may be held at once in it, not an average). A difference array: O(1) per add,
    whatever the number of buckets."""

    def __init__(self, t0: datetime, step: timedelta, count: int):
        self.t0, self.step, self.count = t0, step, count
        self.diff = [0.0] * (count + 1)

    def _index(self, moment: datetime, rounding) -> int:
        return min(self.count, max(0, rounding((moment - self.t0) / self.step)))

    def add(self, start: datetime, end: datetime, amount: float) -> None:
        first, last = self._index(start, math.floor), self._index(end, math.ceil)
        if first < last:
            self.diff[first] += amount
            self.diff[last] -= amount

    def values(self) -> list[float]:
        out, level = [], 0.0
        for index in range(self.count):
            level += self.diff[index]
            out.append(round(level, 1))
        return out


def fleet_plan(*, now: datetime | None = None, hours: int = 24) -> dict:
    """Demand vs capacity per BUCKET_MINUTES over `hours` (CPU cores and memory GB), the planned actions
    (launches due now or later, held back ones, terminations) and the recent fleet.* decisions."""
    now = now or timezone.now()
    plan = plan_fleet(now=now, horizon_hours=hours)
    step = timedelta(minutes=BUCKET_MINUTES)
    count = hours * 60 // BUCKET_MINUTES
    # Buckets on the clock's half hours (slots usually start on them): the first is the one now falls in.
    t0 = now.replace(minute=now.minute - now.minute % BUCKET_MINUTES, second=0, microsecond=0)
    series = {name: _Series(t0, step, count) for name in (
        "demand_cpu", "demand_memory", "running_cpu", "running_memory", "startable_cpu", "startable_memory",
        "planned_cpu", "planned_memory")}
    end = t0 + step * count
    for row in plan.holdings:
        series["demand_cpu"].add(row[1], row[2], row[3])
        series["demand_memory"].add(row[1], row[2], row[4])
    for need, start, finish, _label in plan.pending:
        series["demand_cpu"].add(start, finish, need[0])
        series["demand_memory"].add(start, finish, need[1])
    for row in plan.real_workers:
        if row["status"] not in LIVE_STATUSES or row["draining"]:
            continue
        kind = "running" if row["status"] == WorkerStatus.RUNNING else "startable"
        series[f"{kind}_cpu"].add(t0, end, row["cpu_cores"])
        series[f"{kind}_memory"].add(t0, end, row["memory_gb"])
    actions = []
    for launch in sorted(plan.launches, key=lambda item: item.due):
        if not launch.held:
            ready = max(launch.due, now) + timedelta(minutes=boot_minutes(launch.template))
            series["planned_cpu"].add(ready, end, launch.template.cpu_cores)
            series["planned_memory"].add(ready, end, launch.template.memory_gb)
        actions.append({
            "kind": "hold" if launch.held else "launch", "when": max(launch.due, now), "due_now": launch.due <= now,
            "template": launch.template.name, "limit": launch.held,
            "reason": hold_reason(launch) if launch.held else launch_reason(launch),
        })
    for item in plan.terminations:
        actions.append({"kind": "terminate", "when": now, "due_now": True, "template": item["template"].name,
                        "limit": "", "reason": f"worker {item['worker']['name']} stopped for "
                                               f"{item['stopped_hours']} h with nothing booked"})
    if plan.unfit:
        actions.append({"kind": "hold", "when": now, "due_now": True, "template": "", "limit": "no_template",
                        "reason": f"{len(plan.unfit)} booking(s) fit no scalable template"})
    values = {name: s.values() for name, s in series.items()}
    running = values["running_cpu"]
    with_startable = [a + b for a, b in zip(running, values["startable_cpu"])]
    chart = {
        "labels": [timezone.localtime(t0 + step * i).strftime("%H:%M") for i in range(count)],
        "demand": values["demand_cpu"],
        "running": running,
        "startable": with_startable,
        "planned": [a + b for a, b in zip(with_startable, values["planned_cpu"])],
    }
    rows = [{"at": t0 + step * i, "demand_cpu": values["demand_cpu"][i], "capacity_cpu": chart["planned"][i],
             "demand_memory": values["demand_memory"][i],
             "capacity_memory": values["running_memory"][i] + values["startable_memory"][i]
             + values["planned_memory"][i]}
            for i in range(count)]
    figures = {k: v for k, v in plan.figures.items() if k != "planned"}
    return {
        "now": now, "hours": hours, "bucket_minutes": BUCKET_MINUTES, "chart": chart, "rows": rows,
        "actions": actions, "decisions": recent_decisions(), "figures": figures,
        "enabled": settings.FLEET_PLANNER_ENABLED,
        "scalable_templates": list(WorkerTemplate.objects.filter(scalable=True).values(
            "public_id", "name", "instance_type", "cost_per_hour", "min_workers", "max_workers",
            "max_cost_per_day", "boot_seconds")),
    }


def recent_decisions(limit: int = RECENT_DECISIONS) -> list[dict]:
    """The fleet's latest journalled decisions (the planner's launches, holds and terminations; the power job's
    starts and stops), newest first."""
    rows = (AuditEvent.objects.filter(event_type__in=DECISIONS + POWER_DECISIONS).order_by("-id")
            .values("timestamp", "event_type", "resource_id", "success", "error", "metadata")[:limit])
    return [{**row, "reason": (row["metadata"] or {}).get("reason", ""),
             "limit": (row["metadata"] or {}).get("limit", ""),
             "worker_id": (row["metadata"] or {}).get("worker_id", "")} for row in rows]
