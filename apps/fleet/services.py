"""The fleet planner's acts: launch, terminate, hold back, each journalled with its reason and the numbers
behind it (docs/workers.md#reading-its-decisions). The decision itself is apps.fleet.planner's.

Journal rows (streamed live as `audit` events, CloudEvents `io.lablet.fleet.*`, resource type `fleet`, resource
id the template's public id, or `fleet` for the whole fleet):
- `fleet.launch`: a worker of a scalable template is launched for demand (`reason`, `due`, `bookings`, the
  limits' figures); then `fleet.launch_failed` if EC2 refused in every zone and instance type;
- `fleet.hold`: a launch due now is held back by a limit (`limit` names it), or demand fits no scalable
  template; journalled when the situation changes, not every minute;
- `fleet.terminate`: a stopped worker nobody needs is terminated (`stopped_hours`, `live_workers`, minimums).
EC2 calls happen outside any transaction: the decision commits first (with the worker drained, for a
termination, so no placement lands on it meanwhile), then the EC2 call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.fleet.planner import Launch, Plan, plan_fleet
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.sessions.services.pools import worker_session_pool_set
from apps.workers.ledger import OPEN_END, bookings
from apps.workers.models import Worker, WorkerStatus, WorkerTemplate
from apps.workers.services import worker_drain, worker_terminate
from apps.workers.services.fleet import worker_launch
from apps.core.errors import DomainError

log = logging.getLogger(__name__)
ACTOR = "system"
RESOURCE = "fleet"
LAUNCH, LAUNCH_FAILED, HOLD, TERMINATE = "fleet.launch", "fleet.launch_failed", "fleet.hold", "fleet.terminate"
DECISIONS = (LAUNCH, LAUNCH_FAILED, HOLD, TERMINATE)
# After a launch of a template failed everywhere, its next launch waits this long (EC2 has no capacity).
LAUNCH_RETRY_MINUTES = 10
# A hold is journalled again, unchanged, at most this often.
HOLD_REPEAT = timedelta(hours=24)


def _journal(event_type: str, resource_id: str, metadata: dict, *, success: bool = True, error: str = "") -> None:
    audit_record(event_type=event_type, actor=ACTOR, resource_type=RESOURCE, resource_id=resource_id,
                 action=event_type, success=success, error=error, metadata=metadata)


# What makes two holds "the same situation": everything but the times (a late reservation's slot start is
# clipped to now, so it moves every minute) and the words.
VOLATILE = frozenset({"due", "first_slot_start", "reason", "unfit"})


def _fingerprint(metadata: dict) -> str:
    stable = {k: v for k, v in metadata.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _hold(resource_id: str, metadata: dict, *, now: datetime) -> bool:
    """Journal a hold unless the last hold of this resource said the same within HOLD_REPEAT."""
    fingerprint = _fingerprint(metadata)
    last = (AuditEvent.objects.filter(event_type=HOLD, resource_type=RESOURCE, resource_id=resource_id,
                                      timestamp__gte=now - HOLD_REPEAT)
            .order_by("-id").values_list("metadata", flat=True).first())
    if last and last.get("fingerprint") == fingerprint:
        return False
    with transaction.atomic():
        _journal(HOLD, resource_id, {**metadata, "fingerprint": fingerprint})
    return True


def _failed_recently(template: WorkerTemplate, now: datetime) -> AuditEvent | None:
    return (AuditEvent.objects.filter(event_type=LAUNCH_FAILED, resource_type=RESOURCE,
                                      resource_id=template.public_id,
                                      timestamp__gte=now - timedelta(minutes=LAUNCH_RETRY_MINUTES))
            .order_by("-id").first())


def launch_reason(launch: Launch) -> str:
    if launch.minimum:
        return (f"template {launch.template.name} keeps at least {launch.template.min_workers} worker(s) "
                f"(min_workers); launching one")
    if launch.pool:
        return (f"session pool {launch.pool} has {launch.bookings} waiting session(s) and no worker; "
                f"launching a worker of template {launch.template.name} for it")
    return (f"{launch.bookings} booking(s) from {launch.first_start:%Y-%m-%d %H:%M} UTC fit no running, stopped or "
            f"launching worker; launching a worker of template {launch.template.name} to be ready by then")


def hold_reason(launch: Launch) -> str:
    n = launch.numbers
    name = launch.template.name
    if launch.held == "FLEET_MAX_WORKERS":
        limit = f"FLEET_MAX_WORKERS: {n['live_workers']} live worker(s), at most {n['max_workers']}"
    elif launch.held == "FLEET_MAX_COST_PER_DAY":
        limit = (f"FLEET_MAX_COST_PER_DAY: {n['cost_per_day']:.2f} per day now + {n['launch_cost_per_day']:.2f} "
                 f"for the launch > {n['max_cost_per_day']:.2f}")
    elif launch.held == "max_workers":
        limit = f"template {name} max_workers: {n['template_workers']} live, at most {n['template_max_workers']}"
    else:
        limit = (f"template {name} max_cost_per_day: {n['template_cost_per_day']:.2f} per day now + "
                 f"{n['launch_cost_per_day']:.2f} > {n['template_max_cost_per_day']:.2f}")
    what = (f"session pool {launch.pool}" if launch.pool else "its min_workers" if launch.minimum
            else f"{launch.bookings} booking(s)")
    return f"held back: a worker of template {launch.template.name} for {what} would pass {limit}"


def _do_launch(launch: Launch, *, now: datetime) -> Worker | None:
    template = launch.template
    failed = _failed_recently(template, now)
    if failed is not None:
        _hold(template.public_id, {"reason": f"held back: the last launch of {template.name} failed at "
                                             f"{failed.timestamp:%H:%M} UTC ({failed.error}); retrying after "
                                             f"{LAUNCH_RETRY_MINUTES} minutes",
                                   "limit": "launch_failed", **launch.figures()}, now=now)
        return None
    number = Worker.objects.filter(template=template).count() + 1
    name = f"{template.name}-{number}"
    with transaction.atomic():
        _journal(LAUNCH, template.public_id, {"reason": launch_reason(launch), "name": name, **launch.figures(),
                                              **launch.numbers})
    try:
        worker = worker_launch(actor=ACTOR, name=name, template=template)
    except DomainError as exc:
        with transaction.atomic():
            _journal(LAUNCH_FAILED, template.public_id, {"name": name, **launch.figures()}, success=False,
                     error=str(exc.detail)[:300])
        log.warning("fleet: launch of a %s worker failed: %s", template.name, exc.detail)
        return None
    if launch.pool:
        worker_session_pool_set(worker=worker, pool=launch.pool, actor=ACTOR)
    return worker


def _do_terminate(item: dict, *, now: datetime) -> bool:
    """Check again with the worker locked, drain it and record the decision; then terminate (EC2)."""
    row = item["worker"]
    with transaction.atomic():
        worker = Worker.objects.select_for_update().filter(pk=row["pk"]).first()
        if worker is None or worker.status != WorkerStatus.STOPPED:
            return False
        if bookings([worker.pk], now, OPEN_END) or LabletInstance.objects.filter(worker=worker).exclude(
                status=InstanceStatus.TERMINATED).exists():
            return False
        worker = worker_drain(worker=worker, actor=ACTOR)
        _journal(TERMINATE, item["template"].public_id, {
            "reason": (f"stopped for {item['stopped_hours']} h with nothing booked (FLEET_TERMINATE_UNNEEDED_HOURS "
                       f"{settings.FLEET_TERMINATE_UNNEEDED_HOURS}); {item['live_workers']} live worker(s), minimum "
                       f"{item['min_workers']} (template {item['template'].name}: {item['template_min_workers']})"),
            "worker_id": worker.public_id, "template_id": item["template"].public_id,
            "stopped_hours": item["stopped_hours"], "live_workers": item["live_workers"],
            "min_workers": item["min_workers"], "template_min_workers": item["template_min_workers"]})
    try:
        worker_terminate(worker=worker, actor=ACTOR)
    except DomainError as exc:
        log.warning("fleet: could not terminate worker %s: %s", worker.public_id, exc.detail)
        return False
    return True


# One planner pass at a time across processes (PostgreSQL: a session advisory lock, "LMFLEET"): two passes
# overlapping (one slower than a minute) would both launch for the same demand.
PASS_LOCK_KEY = 0x004C_4D46_4C45_4554


@contextmanager
def _single_pass():
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield True  # SQLite: the embedded default, one q cluster; inside a test's transaction: nothing to race
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PASS_LOCK_KEY])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PASS_LOCK_KEY])


def fleet_plan_run(*, now: datetime | None = None) -> dict:
    """One planner pass: decide (apps.fleet.planner.plan_fleet), then launch what is due, journal holds, and
    terminate what nobody needs. Acts only when FLEET_PLANNER_ENABLED and a template is scalable; a pass
    still running elsewhere makes this one skip."""
    now = now or timezone.now()
    if not settings.FLEET_PLANNER_ENABLED or not WorkerTemplate.objects.filter(scalable=True).exists():
        return {"launched": [], "held": 0, "terminated": [], "skipped": True}
    with _single_pass() as held:
        if not held:
            return {"launched": [], "held": 0, "terminated": [], "skipped": True, "busy": True}
        return _run(now)


def _run(now: datetime) -> dict:
    plan: Plan = plan_fleet(now=now)
    launched, held, terminated = [], 0, []
    for launch in plan.launches:
        if launch.due > now:
            continue  # planned: shown on the fleet plan page, launched when due
        if launch.held:
            held += _hold(launch.template.public_id, {"reason": hold_reason(launch), "limit": launch.held,
                                                      **launch.figures(), **launch.numbers}, now=now)
            continue
        worker = _do_launch(launch, now=now)
        if worker is not None:
            launched.append(worker.public_id)
    if plan.unfit:
        held += _hold(RESOURCE, {"reason": f"{len(plan.unfit)} booking(s) fit no scalable template",
                                 "limit": "no_template", "unfit": plan.unfit[:20], "count": len(plan.unfit)},
                      now=now)
    for item in plan.terminations:
        if _do_terminate(item, now=now):
            terminated.append(item["worker"]["public_id"])
    return {"launched": launched, "held": held, "terminated": terminated, "skipped": False}
