"""The lifecycle tick (every minute, `apps.lablets.tasks.lifecycle_tick`): what is due, in order.

1. Ends, database only: not RUNNING LIFECYCLE_EXPIRE_AFTER_MINUTES after the slot began → 'expired';
   slot over → 'timeslot ended'; RUNNING and idle → 'idle'; graded, its definition not keeping the lab
   until the slot ends → 'graded' (the grading result ends it at once; this catches one left behind).
2. `lablet_instance.expiring`, once, LIFECYCLE_EXPIRING_WARNING_MINUTES before the end of the slot.
3. Network steps, each under its own claim: instantiations due (slot start minus
   LIFECYCLE_LEAD_MINUTES), instantiations in progress, teardowns, cleanups of labs left behind.
   Work that a process killed mid-step left claimed is taken over once its claim runs out.
0. The scheduler: re-placement of what failed or terminated workers held, then waiting reservations.
4. Warm pools (apps/lablets/engine/warm.py): stale, old and surplus warm labs recycled, missing ones placed,
   starting ones imported and booted.
5. Capacity freed → waiting reservations are placed at once.

Idempotent and safe to run in several q clusters at once: every decision is re-checked under a row
lock (the transition function) or a compare-and-swap; a stale one is a log line.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance
from apps.lablets.services.console_access import console_access_reconcile
from apps.lablets.services.instances import GRADED_REASON
from apps.lablets.services.scheduling import scheduler_tick
from apps.lablets.services.steps import lablet_instance_record_expiring
from apps.workers.models import WorkerStatus

from . import instantiate, teardown
from apps.lablets.services.lease import claimable, lease_claim

from .common import log, schedule_pending
from .ending import end_quietly
from .warm import warm_pool_tick

NOT_YET_RUNNING = (S.PENDING, S.SCHEDULED, S.INSTANTIATING)
IDLE_OUTCOMES = frozenset({"stale", "busy", "not_due", "waiting", "clean"})  # nothing done: not counted
FREEING_OUTCOMES = frozenset({S.STOPPED, S.TERMINATED, "failed"})  # capacity came free
ACTIVE = (S.RUNNING, S.COLLECTING, S.GRADING)


def _batch() -> int:
    return settings.LIFECYCLE_TICK_BATCH


def _pks(queryset) -> list[int]:
    return list(queryset.order_by("pk").values_list("pk", flat=True)[:_batch()])


def idle_pks(now: datetime) -> list[int]:
    """RUNNING instances with no activity for their definition's idle_timeout_minutes.

    Activity is `last_activity_at`: set by `POST /api/lablet-instances/{id}/activity` (a student portal or
    the lab tooling reports use), collection and grading results. An instance that never reported any
    activity is not judged idle: LabManager cannot see console use on CML, so without a signal the slot
    simply runs to its end."""
    rows = LabletInstance.objects.filter(status=S.RUNNING, last_activity_at__isnull=False).values_list(
        "pk", "last_activity_at", "definition__idle_timeout_minutes")
    due = []
    for pk, last_activity, idle_minutes in rows.iterator():
        if idle_minutes and last_activity + timedelta(minutes=idle_minutes) <= now:
            due.append(pk)
    return due[:_batch()]


def graded_pks() -> list[int]:
    """GRADING instances with a grading result whose definition does not keep the lab until the slot ends."""
    return _pks(LabletInstance.objects.filter(status=S.GRADING, grading_result__isnull=False,
                                              definition__keep_lab_until_slot_end=False))


def notify_expiring(now: datetime, actor: str) -> int:
    """Emit `lablet_instance.expiring` once per slot end (an extension clears `expiring_notified_at`)."""
    window = now + timedelta(minutes=settings.LIFECYCLE_EXPIRING_WARNING_MINUTES)
    due = LabletInstance.objects.select_related("definition", "worker").filter(
        status__in=ACTIVE, expiring_notified_at__isnull=True, timeslot_end__gt=now, timeslot_end__lte=window,
    ).order_by("timeslot_end")[:_batch()]
    return sum(lablet_instance_record_expiring(instance=instance, actor=actor, now=now) for instance in due)


def lifecycle_tick(*, now: datetime | None = None, actor: str = "system") -> dict:
    """One pass; returns counts of what it did (for the task result and the logs)."""
    now = now or timezone.now()
    started = time.monotonic()
    budget = settings.LIFECYCLE_TICK_BUDGET_SECONDS
    report: Counter = Counter()
    freed = False

    def end(pks, reason, key):
        nonlocal freed
        for pk in pks:
            reached = end_quietly(pk, reason=reason, actor=actor, now=now)
            if reached:
                report[key] += 1
                freed = freed or reached == S.TERMINATED

    # The scheduler first: take back what failed or terminated workers held, place waiting reservations
    # (so that an instance placed now is brought up in this same tick when its slot is near).
    try:
        placed = scheduler_tick(actor=actor)
        report["placed"] += placed.get("placed", 0)
        report["re_placed"] += placed.get("re_placed", 0)
    except Exception:  # noqa: BLE001 - the lifecycle must go on even if placement fails this minute
        log.exception("lifecycle: the scheduler pass failed")
        report["errors"] += 1

    expired_start = now - timedelta(minutes=settings.LIFECYCLE_EXPIRE_AFTER_MINUTES)
    end(_pks(LabletInstance.objects.filter(status__in=NOT_YET_RUNNING, timeslot_start__lte=expired_start)),
        "expired", "expired")
    end(_pks(LabletInstance.objects.filter(status__in=NOT_YET_RUNNING + ACTIVE, timeslot_end__lte=now)),
        "timeslot ended", "ended")
    end(idle_pks(now), "idle", "idle")
    end(graded_pks(), GRADED_REASON, "graded")
    report["expiring"] = notify_expiring(now, actor)

    def run(key, function, pk):
        nonlocal freed
        if time.monotonic() - started > budget:
            report["deferred"] += 1  # the next tick goes on
            return
        try:
            outcome = function(pk)
        except Exception:  # noqa: BLE001 - one instance's bug must not stop the others
            log.exception("lifecycle: %s of instance %s failed", key, pk)
            report["errors"] += 1
            return
        outcomes = outcome if isinstance(outcome, list) else [outcome]
        if any(o not in IDLE_OUTCOMES for o in outcomes):
            report[key] += 1
        freed = freed or any(o in FREEING_OUTCOMES for o in outcomes)

    due = LabletInstance.objects.filter(status=S.SCHEDULED,
                                        timeslot_start__lte=now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES))
    ready = Q(worker__status=WorkerStatus.RUNNING, worker__cml_service_status="available")
    for pk in _pks(due.exclude(ready)):  # database only: says what it waits for
        instantiate.begin(pk, now=now, actor=actor)
    for pk in _pks(due.filter(ready)):
        run("instantiate", lambda pk: instantiate.begin(pk, now=now, actor=actor), pk)
    for pk in _pks(LabletInstance.objects.filter(claimable(now), status=S.INSTANTIATING)):
        run("instantiating", lambda pk: _advance_instantiating(pk, now=now, actor=actor), pk)
    for pk in _pks(LabletInstance.objects.filter(claimable(now), status__in=TEARDOWN)):
        run("teardown", lambda pk: teardown.teardown(pk, now=now, actor=actor), pk)
    cleanups = LabletInstance.objects.filter(claimable(now), status=S.TERMINATED, instantiating_at__isnull=False,
                                             cml_lab_removed_at__isnull=True)
    for pk in _pks(cleanups):
        run("cleanup", lambda pk: teardown.cleanup(pk, now=now, actor=actor), pk)

    try:  # students' direct console access: rules of instances no longer running go, missing ones come
        for key, count in console_access_reconcile(actor=actor, batch=_batch()).items():
            report[key] += count
    except Exception:  # noqa: BLE001 - EC2 trouble must not stop the lifecycle
        log.exception("lifecycle: the console access reconcile failed")
        report["errors"] += 1

    try:  # warm pools: recycle, refill, boot (apps/lablets/engine/warm.py)
        for key, count in warm_pool_tick(now=now, actor=actor).items():
            report[key] += count
        freed = freed or bool(report["warm_removed"])
    except Exception:  # noqa: BLE001 - the pools must not stop the lifecycle
        log.exception("lifecycle: the warm pool pass failed")
        report["errors"] += 1

    if freed:
        schedule_pending(actor)
    result = {key: count for key, count in report.items() if count}
    if result:
        log.info("lifecycle tick: %s", result)
    return result


def _advance_instantiating(pk: int, *, now: datetime, actor: str) -> str:
    step = lease_claim(pk, status=S.INSTANTIATING, now=now, actor=actor)
    return "busy" if step is None else instantiate.advance(step)
