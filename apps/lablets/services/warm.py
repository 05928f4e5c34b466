"""Warm pools: labs of a definition imported and booted ahead, taken over by instances that start now
(docs/workers.md#warm-pools). The only writer of a warm lab's status, CML lab id, lease and bookkeeping
(`warm_lab_transition` for the status, as lablet_instance_transition is for an instance's).

- A warm lab is placed like a booking (`warm_lab_place`): the worker's row locked, the capacity ledger read
  again under the lock, then the STARTING row written: from then on the ledger counts it (kind `warm_lab`,
  open-ended, `warm_lab_bookings`). The engine (apps/lablets/engine/warm.py) imports and boots it with no
  transaction open; all nodes booted → READY.
- An instance created with a slot that has begun takes a READY warm lab of its definition's current content
  (`warm_lab_take`, in the creation's transaction): the warm lab is locked (`SKIP LOCKED`: concurrent
  creations take different labs, or none), its worker locked and re-checked, and in the same transaction the
  warm lab becomes TAKEN (it leaves the ledger) while the instance is placed on its worker with its lab and
  console ports (it enters the ledger by its slot): no double count, no gap, never two instances on one lab.
- Stale (the definition changed), too old (WARM_LAB_MAX_AGE_MINUTES), surplus (the pool shrank) or broken labs
  go RECYCLING (still held: the lab is on CML) → RECYCLED once deleted.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import InvalidTransition
from apps.lablets.models import ConsolePort, InstanceStatus, LabletDefinition, LabletInstance, WarmLab
from apps.lablets.models import WarmLabStatus as W
from apps.lablets.placement import Planner, definition_need, need_of, status_rejection
from apps.lablets.services.instances import lablet_instance_transition
from apps.lablets.services.lease import lease_take
from apps.lablets.services.ports import _workers_sharing_console_host
from apps.workers.ledger import INSTANCE, OPEN_END, WARM_LAB, bookings
from apps.workers.models import Worker, WorkerStatus
from apps.core.errors import Conflict

WARM_TRANSITIONS: dict[str, frozenset[str]] = {
    W.STARTING: frozenset({W.READY, W.RECYCLING}),
    W.READY: frozenset({W.TAKEN, W.RECYCLING}),
    W.RECYCLING: frozenset({W.RECYCLED}),
    W.TAKEN: frozenset(),
    W.RECYCLED: frozenset(),
}
# The states in which the lab is (or may be) on CML and the pool holds it: counted by the ledger.
HELD = (W.STARTING, W.READY, W.RECYCLING)
# The states that count toward a pool's depth.
POOLED = (W.STARTING, W.READY)
JOURNAL = {W.READY: "ready", W.TAKEN: "taken", W.RECYCLING: "recycling", W.RECYCLED: "recycled"}
LEDGER_COLUMNS = ("worker_id", "created_at", "cpu_cores", "memory_gb", "storage_gb", "node_count", "port_count")


def warm_fingerprint(definition: LabletDefinition) -> str:
    """What shapes a definition's lab besides its topology: console port definitions (the PATty tags) and the
    need. A warm lab whose fingerprint or content hash differs from its definition's is stale."""
    shape = {"content_hash": definition.content_hash, "ports": definition.port_definitions or [],
             "need": list(definition_need(definition))}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


def is_start_now(start: datetime, now: datetime) -> bool:
    """A slot that has begun (a student arriving now): the only kind that takes a warm lab. A slot starting
    later is brought up by the engine ahead of its start (LIFECYCLE_LEAD_MINUTES)."""
    return start <= now


# --- the pools' targets ------------------------------------------------------------------------------

def pool_target(definition: LabletDefinition, now: datetime, last_started: datetime | None) -> tuple[int, str]:
    """(depth wanted now, why)."""
    if not definition.warm_pool_depth:
        return 0, "no warm pool"
    if not definition.is_active:
        return 0, "the definition is deprecated"
    idle = timedelta(hours=settings.WARM_POOL_IDLE_HOURS)
    reference = max(filter(None, (last_started, definition.updated_at)))
    if reference + idle <= now:
        return 0, f"no instance started for {settings.WARM_POOL_IDLE_HOURS} h"
    return definition.warm_pool_depth, f"depth {definition.warm_pool_depth}"


def warm_pool_targets(*, now: datetime | None = None) -> list[dict]:
    """Every warm pool with its target now and what it holds (for the fleet planner's demand and the pages):
    [{definition_id, target, why, pooled, ready, need}]. Two queries."""
    now = now or timezone.now()
    pooled = Q(warm_pool_depth__gt=0) | Q(pk__in=WarmLab.objects.filter(status__in=POOLED).values("definition"))
    definitions = list(LabletDefinition.objects.filter(pooled).annotate(last_started=Max("instances__running_at")))
    counts: dict[tuple[int, str], int] = {}
    for definition_pk, status in WarmLab.objects.filter(status__in=POOLED).values_list("definition_id", "status"):
        counts[(definition_pk, status)] = counts.get((definition_pk, status), 0) + 1
    out = []
    for definition in definitions:
        target, why = pool_target(definition, now, definition.last_started)
        ready = counts.get((definition.pk, W.READY), 0)
        out.append({"definition_id": definition.public_id, "target": target, "why": why, "ready": ready,
                    "pooled": ready + counts.get((definition.pk, W.STARTING), 0),
                    "need": definition_need(definition)})
    return out


# --- the ledger ---------------------------------------------------------------------------------------

def warm_lab_bookings(worker_ids, start: datetime, end: datetime, *, exclude_pk=None) -> list[tuple]:
    """The ledger's warm-lab rows (the `worker_bookings` receiver): every warm lab still held (starting, ready,
    recycling), from its creation, open-ended."""
    # A lab being recycled on a worker that is not running holds nothing: its CML is down with the worker (the
    # lab is deleted once it runs again), and counting it would keep a stopped worker from ever being terminated.
    qs = WarmLab.objects.filter(status__in=HELD, created_at__lt=end).exclude(
        Q(status=W.RECYCLING) & ~Q(worker__status=WorkerStatus.RUNNING))
    if worker_ids is not None:
        qs = qs.filter(worker_id__in=list(worker_ids))
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return [(worker, created, OPEN_END, *need, WARM_LAB) for worker, created, *need in
            qs.order_by().values_list(*LEDGER_COLUMNS)]


# --- the journal and the status ----------------------------------------------------------------------

def _journal(warm: WarmLab, *, event: str, actor: str, metadata: dict | None = None, success: bool = True,
             error: str = "") -> None:
    audit_record(event_type=f"warm_lab.{event}", actor=actor, resource_type="warm_lab", resource_id=warm.public_id,
                 action=f"warm_lab.{event}", success=success, error=error[:500],
                 metadata={"definition_id": warm.definition.public_id, "worker_id": warm.worker.public_id,
                           "cml_lab_id": warm.cml_lab_id or None, **(metadata or {})})


def _load(pk: int) -> WarmLab:
    return WarmLab.objects.select_related("definition", "worker").get(pk=pk)


@transaction.atomic
def warm_lab_transition(*, warm_lab_pk: int, to: str, actor: str, reason: str = "", changes: dict | None = None,
                        metadata: dict | None = None) -> WarmLab:
    """The only place a warm lab's status changes: the row locked, the edge checked against WARM_TRANSITIONS,
    `warm_lab.<ready|taken|recycling|recycled>` journalled with the reason, in one transaction."""
    locked = WarmLab.objects.select_for_update(of=("self",)).select_related("definition", "worker").get(
        pk=warm_lab_pk)
    if to not in WARM_TRANSITIONS[locked.status]:
        raise InvalidTransition("Warm lab", locked.public_id, locked.status, to)
    now = timezone.now()
    values = dict(changes or {})
    if to == W.READY:
        values["ready_at"] = now
    if to in (W.TAKEN, W.RECYCLING) and locked.ended_at is None:
        values["ended_at"] = now
    if to == W.RECYCLING:
        values["recycle_reason"] = reason[:200]
    WarmLab.objects.filter(pk=locked.pk).update(status=to, **values)
    source = locked.status
    locked.refresh_from_db()
    _journal(locked, event=JOURNAL[to], actor=actor, metadata={"from": source, "to": to, "reason": reason,
                                                                **(metadata or {})})
    return locked


def warm_lab_recycle(*, warm_lab_pk: int, actor: str, reason: str) -> bool:
    """STARTING/READY → RECYCLING (the engine deletes its lab next). False when it moved on meanwhile (taken)."""
    try:
        warm_lab_transition(warm_lab_pk=warm_lab_pk, to=W.RECYCLING, actor=actor, reason=reason,
                            changes={"claimed_until": None})
    except InvalidTransition:
        return False
    return True


@transaction.atomic
def warm_lab_recycled(*, warm_lab_pk: int, actor: str) -> WarmLab:
    """Its lab is gone from CML: RECYCLED, its console ports given back."""
    ConsolePort.objects.filter(warm_lab_id=warm_lab_pk).delete()
    return warm_lab_transition(warm_lab_pk=warm_lab_pk, to=W.RECYCLED, actor=actor, reason="lab deleted from CML",
                               changes={"claimed_until": None})


# --- placing a warm lab ---------------------------------------------------------------------------------

class _DoesNotFit(Exception):
    pass


def warm_lab_place(*, definition: LabletDefinition, actor: str, now: datetime | None = None) -> WarmLab | None:
    """A new warm lab of `definition` on the best running worker with room for it from now on, for good
    (open-ended); None when no worker has room. The worker's row is locked and its ledger read again before
    the row is written (a lablet placement or a session lab cannot slip in between)."""
    now = now or timezone.now()
    need = definition_need(definition)
    workers = list(Worker.objects.filter(status=WorkerStatus.RUNNING, cml_service_status="available",
                                         draining=False).order_by("pk"))
    planner = Planner(workers, bookings([w.pk for w in workers], now, OPEN_END))
    for choice in planner.ranked(need, now, OPEN_END):
        try:
            with transaction.atomic():
                worker = Worker.objects.select_for_update().get(pk=choice.worker.pk)
                if worker.status != WorkerStatus.RUNNING:
                    raise _DoesNotFit
                again = Planner([worker], bookings([worker.pk], now, OPEN_END))
                if not again.assess_all(need, now, OPEN_END)[0].fits:
                    raise _DoesNotFit
                warm = WarmLab.objects.create(
                    definition=definition, worker=worker, content_hash=definition.content_hash,  # STARTING
                    fingerprint=warm_fingerprint(definition), cpu_cores=need[0], memory_gb=need[1],
                    storage_gb=need[2], node_count=need[3], port_count=need[4], created_at=now)
                warm = _load(warm.pk)
                _journal(warm, event="started", actor=actor,
                         metadata={"reason": f"warm pool of {definition.public_id}: depth "
                                             f"{definition.warm_pool_depth}", "content_hash": warm.content_hash})
                return warm
        except _DoesNotFit:
            continue
    return None


@transaction.atomic
def warm_lab_ports_allocate(*, warm_lab: WarmLab) -> list[dict]:
    """The warm lab's console ports [{name, port}], one per port definition, lowest free first (the workers
    sharing its console host locked, as for an instance: apps.lablets.services.ports). Idempotent."""
    definitions = list(warm_lab.definition.port_definitions or [])
    if not definitions:
        return []
    sharing = _workers_sharing_console_host(warm_lab.worker)
    list(Worker.objects.select_for_update().filter(pk__in=sharing).order_by("pk").values_list("pk", flat=True))
    held = _held(warm_lab.pk)
    if held:
        return held
    used = set(ConsolePort.objects.filter(worker_id__in=sharing).values_list("port", flat=True))
    free = [port for port in range(settings.CONSOLE_PORT_MIN, settings.CONSOLE_PORT_MAX + 1) if port not in used]
    if len(free) < len(definitions):
        raise Conflict(f"Worker {warm_lab.worker.public_id} has {len(free)} free console port(s); warm lab "
                       f"{warm_lab.public_id} needs {len(definitions)}.", extra={"reason": "ports"})
    ConsolePort.objects.bulk_create([
        ConsolePort(worker_id=warm_lab.worker_id, port=port, warm_lab=warm_lab, name=str(spec.get("name", "")))
        for port, spec in zip(free, definitions)])
    return _held(warm_lab.pk)


def _held(warm_lab_pk: int) -> list[dict]:
    return [{"name": name, "port": port} for name, port in
            ConsolePort.objects.filter(warm_lab_id=warm_lab_pk).order_by("port").values_list("name", "port")]


# --- the engine's bookkeeping ----------------------------------------------------------------------------

def warm_lab_claim(*, warm_lab_pk: int, now: datetime) -> datetime | None:
    """A compare-and-swap lease on a warm lab for one engine step (two q clusters never work on one lab);
    the lease, or None when another process holds it."""
    until = max(timezone.now(), now) + timedelta(seconds=settings.LIFECYCLE_STEP_LEASE_SECONDS)
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=max(timezone.now(), now))
    taken = WarmLab.objects.filter(free, pk=warm_lab_pk, status__in=HELD).update(claimed_until=until)
    return until if taken else None


def warm_lab_release(*, warm_lab_pk: int, until: datetime, error: str = "") -> int:
    """Give the lease back; with `error`, a failed attempt counted (the engine recycles the lab after
    LIFECYCLE_MAX_ATTEMPTS). Returns the attempts so far."""
    mine = WarmLab.objects.filter(pk=warm_lab_pk, claimed_until=until)
    if error:
        warm = mine.first()
        attempts = (warm.attempts if warm else 0) + 1
        mine.update(claimed_until=None, attempts=attempts, last_error=error[:500])
        return attempts
    mine.update(claimed_until=None, attempts=0, last_error="")
    return 0


def warm_lab_record_lab(*, warm_lab_pk: int, lab_id: str) -> str:
    """The warm lab's CML lab, imported: recorded unless one is already (the first wins). Returns the lab id
    it ends up with."""
    WarmLab.objects.filter(pk=warm_lab_pk, cml_lab_id="").update(cml_lab_id=lab_id)
    return WarmLab.objects.values_list("cml_lab_id", flat=True).get(pk=warm_lab_pk)


def warm_lab_forget_lab(*, warm_lab_pk: int, lab_id: str) -> None:
    """The recorded lab vanished from CML: forgotten, the next step imports another."""
    WarmLab.objects.filter(pk=warm_lab_pk, cml_lab_id=lab_id).update(cml_lab_id="")


# --- the hand-over ---------------------------------------------------------------------------------------

def warm_lab_take(*, instance: LabletInstance, actor: str, now: datetime | None = None) -> datetime | None:
    """In the caller's transaction (the creation of `instance`, PENDING, its slot begun): take over a READY warm
    lab of its definition's current content, if any. Returns the engine's lease on the instance (the caller
    finishes with apps.lablets.engine.warm.warm_lab_hand_over after the commit), or None: no warm lab, the
    instance goes the normal way.

    One warm lab at a time is locked with SKIP LOCKED (a concurrent creation holding one is not waited for, and
    is never given the same lab), then its worker, whose ledger is read again without the warm lab: the
    instance's slot must fit where the warm lab was. In one transaction the warm lab becomes TAKEN (it leaves
    the ledger), the instance is placed on its worker with its lab and console ports (PENDING → SCHEDULED →
    INSTANTIATING, it enters the ledger by its slot)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("warm_lab_take must run inside the caller's transaction")
    now = now or timezone.now()
    definition = instance.definition
    fresh = WarmLab.objects.filter(definition=definition, status=W.READY, content_hash=definition.content_hash,
                                   fingerprint=warm_fingerprint(definition),
                                   created_at__gt=now - timedelta(minutes=settings.WARM_LAB_MAX_AGE_MINUTES),
                                   ).exclude(cml_lab_id="")  # too old: recycled at the next tick, never handed out
    tried: list[int] = []
    for _ in range(5):  # a few candidates at most; each locked alone, so others stay free for other creations
        warm = (fresh.exclude(pk__in=tried).select_for_update(skip_locked=True, of=("self",))
                .order_by("ready_at", "pk").first())
        if warm is None:
            return None
        tried.append(warm.pk)
        worker = Worker.objects.select_for_update().get(pk=warm.worker_id)
        if worker.status != WorkerStatus.RUNNING or status_rejection(worker):
            continue
        start, end = instance.timeslot_start, instance.timeslot_end
        rows = bookings([worker.pk], start, end, exclude={WARM_LAB: warm.pk, INSTANCE: instance.pk})
        if not Planner([worker], rows).assess_all(need_of(instance), start, end)[0].fits:
            continue
        warm_lab_transition(warm_lab_pk=warm.pk, to=W.TAKEN, actor=actor,
                            reason=f"taken by lablet instance {instance.public_id}",
                            changes={"taken_by": instance, "claimed_until": None},
                            metadata={"instance_id": instance.public_id,
                                      "warm_for_seconds": round((now - (warm.ready_at or now)).total_seconds())})
        ConsolePort.objects.filter(warm_lab_id=warm.pk).update(instance=instance, warm_lab=None)
        LabletInstance.objects.filter(pk=instance.pk, status=InstanceStatus.PENDING).update(
            worker=worker, cml_lab_id=warm.cml_lab_id)
        instance = lablet_instance_transition(
            instance=instance, to=InstanceStatus.SCHEDULED, actor=actor,
            reason=f"took warm lab {warm.public_id} on {worker.public_id}")
        lablet_instance_transition(
            instance=instance, to=InstanceStatus.INSTANTIATING, actor=actor,
            reason=f"warm lab {warm.public_id}: lab {warm.cml_lab_id} already booted")
        return lease_take(instance.pk, now=now, step="taking over a warm lab")
    return None
