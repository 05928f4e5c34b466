"""Scheduling: putting lablet instances on workers, safely across processes (docs/scheduler.md).

Concurrency: a placement locks the chosen worker's row (`SELECT ... FOR UPDATE` on PostgreSQL) and
re-checks that worker's bookings under the lock before it books, so two API processes or schedulers
can never overbook a worker. Each try runs in a savepoint: a worker that no longer fits is released
at once (PostgreSQL releases row locks taken after a savepoint that is rolled back), so a placement
holds at most one worker lock while it waits for another, and placements cannot deadlock each other.
The batch pass locks every worker in primary-key order. On SQLite every write transaction is
IMMEDIATE: placements are serialised by the database itself.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.lifecycle import FAILED_REASON, LIVE
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.placement import Planner, definition_need, live_bookings, need_of
from apps.lablets.services.instances import lablet_instance_transition, lablet_instances_transition_many
from apps.lablets.services.journal import instance_audit
from apps.workers.models import Worker, WorkerStatus
from apps.core.errors import Conflict, InvalidTransition

log = logging.getLogger(__name__)


class _DoesNotFit(Exception):
    """Rolls a savepoint back (and with it the worker lock) when the re-check under the lock fails."""


def effective_priority(priority: int, created_at: datetime, now: datetime) -> int:
    """Priority with aging: one point per SCHEDULER_AGING_MINUTES waited, at most 10."""
    aging = settings.SCHEDULER_AGING_MINUTES
    waited = max(0.0, (now - created_at).total_seconds() / 60)
    return min(10, priority + (int(waited // aging) if aging > 0 else 0))


def advisory_lock(key: str) -> None:
    """A transaction-scoped lock on a name (PostgreSQL); SQLite serialises writers anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])


def _placed_reason(assessment, policy: str) -> str:
    where = assessment.worker.public_id
    started = "" if assessment.tier == 0 else f" (worker {assessment.worker.status}: started ahead of the slot)"
    return f"placed on {where} by {policy}{started}"


@transaction.atomic
def lablet_instance_place(*, instance: LabletInstance, actor: str, policy: str | None = None) -> LabletInstance:
    """Put one PENDING instance on the best worker with room for its whole slot.

    Returns the instance: SCHEDULED, or still PENDING (a reservation) when no worker has room.
    """
    locked = LabletInstance.objects.select_for_update(of=("self",)).get(pk=instance.pk)
    if locked.status != InstanceStatus.PENDING:
        return locked
    policy = policy or settings.SCHEDULER_POLICY
    start, end, need = locked.timeslot_start, locked.timeslot_end, need_of(locked)
    planner = Planner.for_slot(start, end, exclude_pk=locked.pk, policy=policy)
    for choice in planner.ranked(need, start, end):
        try:
            with transaction.atomic():
                worker = Worker.objects.select_for_update().get(pk=choice.worker.pk)
                again = Planner.for_slot(start, end, exclude_pk=locked.pk, policy=policy, workers=[worker])
                if not again.assess_all(need, start, end)[0].fits:
                    raise _DoesNotFit
                LabletInstance.objects.filter(pk=locked.pk).update(worker=worker)
                return lablet_instance_transition(instance=locked, to=InstanceStatus.SCHEDULED, actor=actor,
                                                  reason=_placed_reason(choice, policy))
        except _DoesNotFit:
            continue  # someone booked it between our look and our lock: try the next best
    return locked


def no_room_summary(assessments) -> str:
    """'3 workers: 2 capacity, 1 draining' — why nothing fits, for a problem detail."""
    if not assessments:
        return "there are no workers"
    counts: dict[str, int] = {}
    for assessment in assessments:
        counts[assessment.reason or "fits"] = counts.get(assessment.reason or "fits", 0) + 1
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(assessments)} worker(s): {parts}"


# What the pass reads of a pending instance (deferring the rest halves the cost of loading 10,000).
PASS_COLUMNS = ("public_id", "status", "owner_id", "priority", "created_at", "timeslot_start", "timeslot_end",
                "cpu_cores", "memory_gb", "storage_gb", "node_count", "port_count", "worker_id",
                "definition__public_id")


def _place_many(pending: list[LabletInstance], *, actor: str, policy: str, reason: str) -> list[LabletInstance]:
    """Place `pending` (locked by the caller, in the order given) in one go: every worker locked in pk
    order, bookings read once, planned in memory, one bulk write. Inside the caller's transaction."""
    workers = list(Worker.objects.select_for_update().exclude(status=WorkerStatus.TERMINATED).order_by("pk"))
    window_start = min(i.timeslot_start for i in pending)
    window_end = max(i.timeslot_end for i in pending)
    planner = Planner(workers, live_bookings([w.pk for w in workers], window_start, window_end), policy=policy)
    placed, changes = [], {}
    for instance in pending:
        need = need_of(instance)
        choice = planner.choose(need, instance.timeslot_start, instance.timeslot_end)
        if choice is None:
            continue
        planner.book(choice.worker.pk, need, instance.timeslot_start, instance.timeslot_end)
        placed.append(instance)
        changes[instance.pk] = {"worker": choice.worker}
    if placed:
        lablet_instances_transition_many(instances=placed, to=InstanceStatus.SCHEDULED, actor=actor,
                                         reason=reason, changes=changes)
    return placed


def lablet_instances_schedule_pending(*, actor: str = "system", now: datetime | None = None,
                                      policy: str | None = None) -> dict:
    """The scheduler pass: place every waiting PENDING instance that fits, highest (aged) priority first,
    oldest first within a priority. One transaction, every worker locked in pk order, bookings read once,
    one bulk write; `io.lablet.instance.scheduled` goes out for each placed instance."""
    now = now or timezone.now()
    policy = policy or settings.SCHEDULER_POLICY
    with transaction.atomic():
        pending = list(
            LabletInstance.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("definition")
            .filter(status=InstanceStatus.PENDING, timeslot_end__gt=now)
            .only(*PASS_COLUMNS)
        )
        if not pending:
            return {"pending": 0, "placed": 0, "waiting": 0}
        pending.sort(key=lambda i: (-effective_priority(i.priority, i.created_at, now), i.created_at, i.pk))
        placed = _place_many(pending, actor=actor, policy=policy, reason=f"placed by the scheduler ({policy})")
    return {"pending": len(pending), "placed": len(placed), "waiting": len(pending) - len(placed)}


def lablet_instances_place_batch(*, pks: list[int], actor: str, policy: str | None = None) -> set[int]:
    """Place these PENDING instances (a roster just booked) in the order given, in one pass; returns the
    pks placed. Instances no longer pending (another pass placed them meanwhile) are left as they are."""
    policy = policy or settings.SCHEDULER_POLICY
    if not pks:
        return set()
    with transaction.atomic():
        rows = {i.pk: i for i in LabletInstance.objects.select_for_update(of=("self",)).select_related("definition")
                .filter(pk__in=pks, status=InstanceStatus.PENDING).only(*PASS_COLUMNS)}
        pending = [rows[pk] for pk in pks if pk in rows]
        if not pending:
            return set()
        placed = _place_many(pending, actor=actor, policy=policy, reason=f"placed with its roster ({policy})")
    return {i.pk for i in placed}


def lablet_instances_unplace_worker(*, worker: Worker, actor: str, reason: str) -> int:
    """Re-placement: the SCHEDULED instances of a worker that can no longer host them (failed, terminated,
    drained with force) go back to PENDING and are placed again. Instances already instantiating or
    running are the lifecycle engine's concern. Returns how many went back."""
    moved = 0
    for instance in LabletInstance.objects.filter(worker=worker, status=InstanceStatus.SCHEDULED):
        try:
            with transaction.atomic():
                LabletInstance.objects.filter(pk=instance.pk, status=InstanceStatus.SCHEDULED).update(worker=None)
                lablet_instance_transition(instance=instance, to=InstanceStatus.PENDING, actor=actor,
                                           reason=f"{reason}: worker {worker.public_id} can no longer host it; "
                                                  "placing it again")
            moved += 1
        except InvalidTransition:
            continue  # it moved on meanwhile (e.g. instantiating): not ours to take back
    if moved:
        lablet_instances_schedule_pending(actor=actor)
    return moved


def scheduler_tick(*, actor: str = "system") -> dict:
    """The scheduler's share of lifecycle_tick: take back what failed or terminated workers can no longer
    host (in case the re-placement after their transition was lost), then place waiting instances."""
    moved = 0
    gone = Worker.objects.filter(status__in=(WorkerStatus.FAILED, WorkerStatus.TERMINATED),
                                 instances__status=InstanceStatus.SCHEDULED).distinct()
    for worker in gone:
        moved += lablet_instances_unplace_worker(worker=worker, actor=actor, reason=f"worker {worker.status}")
    summary = lablet_instances_schedule_pending(actor=actor)
    return {**summary, "re_placed": moved}


@transaction.atomic
def lablet_instance_set_priority(*, instance: LabletInstance, actor: str, priority: int) -> LabletInstance:
    locked = LabletInstance.objects.select_for_update(of=("self",)).select_related("definition", "worker").get(
        pk=instance.pk)
    if locked.status != InstanceStatus.PENDING:
        raise Conflict(f"Lablet instance {locked.public_id} is {locked.status}; only a pending instance's "
                       "priority can change.")
    before = locked.priority
    if before != priority:
        LabletInstance.objects.filter(pk=locked.pk).update(priority=priority, updated_at=timezone.now())
        locked.refresh_from_db()
        instance_audit(locked, event_type="lablet_instance.priority_changed", actor=actor,
                       action="lablet_instance.set_priority",
                       metadata={"before": {"priority": before}, "after": {"priority": priority}})
    return locked


# --- create-time checks ------------------------------------------------------------------------------

def check_owner_overlap(*, owner_id: str, start: datetime, end: datetime, exclude_pk=None) -> None:
    clash = LabletInstance.objects.filter(owner_id=owner_id, status__in=LIVE, timeslot_start__lt=end,
                                          timeslot_end__gt=start)
    if exclude_pk is not None:
        clash = clash.exclude(pk=exclude_pk)
    clash = clash.order_by("timeslot_start").first()
    if clash:
        raise Conflict(
            f"Owner {owner_id} already holds live lablet instance {clash.public_id} "
            f"({clash.timeslot_start.isoformat()} to {clash.timeslot_end.isoformat()}), overlapping this timeslot.",
            extra={"conflicting_instance_id": clash.public_id},
        )


def _booked_minutes(qs, day_start: datetime) -> float:
    rows = qs.filter(timeslot_start__gte=day_start, timeslot_start__lt=day_start + timedelta(days=1)).exclude(
        status=InstanceStatus.TERMINATED, running_at__isnull=True).values_list("timeslot_start", "timeslot_end")
    return sum((end - start).total_seconds() / 60 for start, end in rows)


def check_quotas(*, user, owner_id: str, start: datetime, end: datetime) -> None:
    """Per instructor (the creating user) and per owner: live instances at once, booked minutes per day
    (the UTC day the slot starts; instances cancelled before they ran do not count). 409 when over."""
    minutes = (end - start).total_seconds() / 60
    day_start = start.astimezone(timezone.get_fixed_timezone(0)).replace(hour=0, minute=0, second=0, microsecond=0)
    scopes = [("owner", owner_id, LabletInstance.objects.filter(owner_id=owner_id),
               settings.QUOTA_OWNER_MAX_LIVE, settings.QUOTA_OWNER_MAX_MINUTES_PER_DAY)]
    if user is not None and getattr(user, "pk", None):
        scopes.append(("instructor", user.get_username(), LabletInstance.objects.filter(created_by=user),
                       settings.QUOTA_INSTRUCTOR_MAX_LIVE, settings.QUOTA_INSTRUCTOR_MAX_MINUTES_PER_DAY))
    for scope, who, qs, max_live, max_minutes in scopes:
        if max_live:
            live = qs.filter(status__in=LIVE).count()
            if live + 1 > max_live:
                raise Conflict(
                    f"Quota exceeded: {scope} {who} already has {live} live lablet instance(s); "
                    f"the limit is {max_live}.",
                    extra={"quota": f"{scope}_max_live_instances", "limit": max_live, "current": live},
                )
        if max_minutes:
            booked = _booked_minutes(qs, day_start)
            if booked + minutes > max_minutes:
                raise Conflict(
                    f"Quota exceeded: {scope} {who} has {booked:g} minutes booked on {day_start.date()}; "
                    f"{minutes:g} more would pass the limit of {max_minutes} minutes per day.",
                    extra={"quota": f"{scope}_max_minutes_per_day", "limit": max_minutes, "current": booked},
                )


# --- reads: preview and status --------------------------------------------------------------------

def scheduler_preview(*, definition, start: datetime, end: datetime, count: int = 1,
                      policy: str | None = None) -> dict:
    """Dry run: where `count` instances of `definition` in [start, end) would land, and for every worker
    why it would not take one, with its utilisation (at the busiest moment of the slot) before and after."""
    policy = policy or settings.SCHEDULER_POLICY
    need = definition_need(definition)
    planner = Planner.for_slot(start, end, policy=policy)
    before = {a.worker.pk: a for a in planner.assess_all(need, start, end)}
    placements, per_worker = [], {}
    for index in range(count):
        choice = planner.choose(need, start, end)
        if choice is None:
            placements.append({"index": index, "worker_id": None, "reason": "no worker has room"})
            continue
        planner.book(choice.worker.pk, need, start, end)
        per_worker[choice.worker.pk] = per_worker.get(choice.worker.pk, 0) + 1
        placements.append({"index": index, "worker_id": choice.worker.public_id,
                           "starts_worker": choice.tier == 1})
    after = {a.worker.pk: a for a in planner.assess_all(need, start, end)}
    workers = []
    for worker in planner.workers:
        first, last = before[worker.pk], after[worker.pk]
        peak_after = planner.timelines[worker.pk].peak(start, end)
        row = {
            "worker_id": worker.public_id,
            "name": worker.name,
            "status": worker.status,
            "draining": worker.draining,
            "placed": per_worker.get(worker.pk, 0),
            "utilisation_before": first.utilisation() if first.peak else None,
            "utilisation_after": _utilisation(peak_after, first.capacity),
            "rejected": None,
        }
        if not first.fits:
            row["rejected"] = {"reason": first.reason, "detail": first.detail}
        elif not row["placed"]:
            row["rejected"] = {"reason": "not_chosen", "detail": f"fits, but {policy} preferred other workers"}
        elif not last.fits and last.reason not in ("", None):
            row["full_after"] = {"reason": last.reason, "detail": last.detail}
        workers.append(row)
    placed = sum(1 for p in placements if p["worker_id"])
    return {
        "definition_id": definition.public_id,
        "timeslot_start": start,
        "timeslot_end": end,
        "count": count,
        "placeable": placed,
        "unplaceable": count - placed,
        "policy": policy,
        "placements": placements,
        "workers": workers,
    }


def _utilisation(peak: list[int], capacity) -> dict:
    names = ("cpu_cores", "memory_gb", "storage_gb", "node_count")
    return {name: (round(100.0 * peak[d] / capacity[d], 1) if capacity and capacity[d] else None)
            for d, name in enumerate(names)}


def scheduler_status(*, now: datetime | None = None) -> dict:
    """Queue depth, reservations, usable workers, placements in the last 24 hours (a few COUNTs)."""
    now = now or timezone.now()
    workers = Worker.objects.exclude(status=WorkerStatus.TERMINATED)
    pending = LabletInstance.objects.filter(status=InstanceStatus.PENDING)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    # Ended today (since midnight in TIME_ZONE, UTC): one query, on the terminated_at index. Failed: the
    # termination reason the engine writes when a step gave up or the policy refused (`failed: ...`).
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    failed = Q(termination_reason__startswith=FAILED_REASON)
    ended = LabletInstance.objects.filter(terminated_at__gte=midnight, terminated_at__lte=now).aggregate(
        completed=Count("pk", filter=~failed), failed=Count("pk", filter=failed))
    return {
        "policy": settings.SCHEDULER_POLICY,
        "workers_total": workers.count(),
        "workers_usable": workers.filter(status=WorkerStatus.RUNNING, draining=False,
                                         cml_service_status="available").count(),
        "workers_draining": workers.filter(draining=True).count(),
        "workers_stopped": workers.filter(status=WorkerStatus.STOPPED).count(),
        "queue_depth": pending.count(),
        "pending_reservations": pending.filter(timeslot_end__gt=now).count(),
        "oldest_pending_since": oldest,
        "scheduled": LabletInstance.objects.filter(status=InstanceStatus.SCHEDULED).count(),
        "live": LabletInstance.objects.filter(status__in=LIVE).count(),
        "placements_last_24h": AuditEvent.objects.filter(
            event_type="lablet_instance.scheduled", timestamp__gte=now - timedelta(hours=24)).count(),
        "completed_today": ended["completed"],
        "failed_today": ended["failed"],
        "generated_at": now,
    }
