"""Warm pools, the engine's part (docs/workers.md#warm-pools): a step of the lifecycle tick.

1. Decisions, database only, per definition with a pool (or warm labs left): its target depth is
   `warm_pool_depth`, or 0 when no instance of it started for WARM_POOL_IDLE_HOURS (nor was it edited) or it
   is deprecated. Stale labs (the definition's content or console ports changed), labs older than
   WARM_LAB_MAX_AGE_MINUTES and labs on a worker that can no longer hand them out are recycled; surplus labs
   (starting first, then the oldest) are recycled; missing ones are placed (apps.lablets.services.warm).
2. Network steps, each under the warm lab's own lease, no transaction open: STARTING labs are imported
   (titled with the warm lab's id, PATty-tagged with its console ports, found again by title after a crash),
   started and looked at; all nodes booted → READY. RECYCLING labs are deleted from CML → RECYCLED.

The hand-over to an instance happens at its creation (apps.lablets.services.warm.warm_lab_take);
`warm_lab_hand_over` finishes it after the commit through the instantiation's own last step
(apps.lablets.engine.instantiate.advance: console ports, console entries, RUNNING, direct console access).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from apps.core.errors import Conflict
from apps.lablets.lifecycle import FAILED_REASON
from apps.lablets.models import LabletDefinition, WarmLab
from apps.lablets.models import WarmLabStatus as W
from apps.lablets.patty import topology_with_console_tags
from apps.lablets.services.lease import Claim
from apps.lablets.services.warm import (
    POOLED, pool_target, warm_fingerprint, warm_lab_claim, warm_lab_forget_lab, warm_lab_place, warm_lab_ports_allocate,
    warm_lab_record_lab, warm_lab_recycle, warm_lab_recycled, warm_lab_release, warm_lab_transition)
from apps.workers import cml
from apps.workers.cml.topology_policy import TopologyRefused, topology_check
from apps.workers.models import WorkerStatus
from apps.workers.services.cml import cml_credentials

from . import instantiate
from .common import cml_timeout, load

log = logging.getLogger("apps.lablets.engine")

GONE = (WorkerStatus.TERMINATED, WorkerStatus.FAILED)


def warm_lab_hand_over(pk: int, *, until: datetime, now: datetime, actor: str) -> str:
    """Finish an instance that just took a warm lab (after the creation's commit): its lab is recorded and
    booted, so the instantiation's last step runs at once (console ports and entries, RUNNING). Whatever it
    cannot finish (CML unreachable) the next tick does, as for any instantiating instance: the creation has
    committed, so nothing here fails it."""
    try:
        return instantiate.advance(Claim(instance=load(pk), until=until, now=now, actor=actor))
    except Exception:  # noqa: BLE001 - the booking stands; its claim runs out and the tick takes over
        log.exception("warm pool: the hand-over of instance %s failed; the lifecycle tick finishes it", pk)
        return "retry"


# --- decisions ------------------------------------------------------------------------------------------

def recycle_reason(warm: WarmLab, definition: LabletDefinition, now: datetime) -> str:
    """Why a pooled warm lab must go ('' when it may stay)."""
    if warm.content_hash != definition.content_hash:
        return "stale: the definition's topology changed"
    if warm.fingerprint != warm_fingerprint(definition):
        return "stale: the definition's console ports or resources changed"
    max_age = settings.WARM_LAB_MAX_AGE_MINUTES
    if warm.created_at + timedelta(minutes=max_age) <= now:
        return f"older than WARM_LAB_MAX_AGE_MINUTES ({max_age})"
    worker = warm.worker
    if worker.status != WorkerStatus.RUNNING or worker.draining:
        return f"worker {worker.public_id} is {'draining' if worker.draining else worker.status}"
    return ""


def _decide(definition: LabletDefinition, last_started, now: datetime, actor: str, report: Counter) -> None:
    target, why = pool_target(definition, now, last_started)
    keep = []
    for warm in WarmLab.objects.select_related("definition", "worker").filter(
            definition=definition, status__in=POOLED).order_by("created_at", "pk"):
        reason = recycle_reason(warm, definition, now)
        if reason and warm_lab_recycle(warm_lab_pk=warm.pk, actor=actor, reason=reason):
            report["warm_recycled"] += 1
        elif not reason:
            keep.append(warm)
    surplus = len(keep) - target
    if surplus > 0:
        keep.sort(key=lambda w: (w.status == W.READY, w.created_at, w.pk))  # not yet ready first, then oldest
        for warm in keep[:surplus]:
            if warm_lab_recycle(warm_lab_pk=warm.pk, actor=actor, reason=f"surplus: pool target {target} ({why})"):
                report["warm_recycled"] += 1
        return
    for _ in range(-surplus):
        if warm_lab_place(definition=definition, actor=actor, now=now) is None:
            log.info("warm pool: no worker has room for a warm lab of %s", definition.public_id)
            report["warm_no_room"] += 1
            break
        report["warm_started"] += 1


# --- network steps --------------------------------------------------------------------------------------

def _creds(warm: WarmLab) -> dict:
    creds = cml_credentials(warm.worker)
    if creds is None:
        raise Conflict(f"worker {warm.worker.public_id} has no address yet")
    return {**creds, "timeout": cml_timeout()}


def _ensure_lab(warm: WarmLab, creds: dict, ports: list[dict]) -> str:
    if warm.cml_lab_id:
        return warm.cml_lab_id
    found = cml.cml_lab_ids_by_title(**creds, title=warm.public_id)  # an attempt that died before recording it
    if found:
        lab_id = warm_lab_record_lab(warm_lab_pk=warm.pk, lab_id=found[0])
        for extra in found[1:]:
            cml.cml_lab_delete(**creds, lab_id=extra, force=True, missing_ok=True)
        return lab_id
    definition = warm.definition
    topology_check(definition.cml_lab_yaml, trusted=definition.trusted, field="cml_lab_yaml")
    topology = topology_with_console_tags(definition.cml_lab_yaml, port_definitions=definition.port_definitions,
                                          ports=ports)
    lab_id = cml.cml_lab_import(**creds, topology_yaml=topology, title=warm.public_id)
    recorded = warm_lab_record_lab(warm_lab_pk=warm.pk, lab_id=lab_id)
    if recorded != lab_id:
        cml.cml_lab_delete(**creds, lab_id=lab_id, force=True, missing_ok=True)
    return recorded


def _claimed(pk: int, *, now: datetime, status: str) -> tuple[WarmLab | None, datetime | None, str]:
    """Take the warm lab's lease and read it: (warm lab, lease end, "") when it is still in `status`; else
    (None, None, "busy") when another process holds it, (None, None, "stale") when it moved on (lease released)."""
    until = warm_lab_claim(warm_lab_pk=pk, now=now)
    if until is None:
        return None, None, "busy"
    warm = WarmLab.objects.select_related("definition", "worker").get(pk=pk)
    if warm.status != status:
        warm_lab_release(warm_lab_pk=pk, until=until)
        return None, None, "stale"
    return warm, until, ""


def advance_starting(pk: int, *, now: datetime, actor: str) -> str:
    """Import, start and look at a STARTING warm lab; READY once every node booted."""
    warm, until, outcome = _claimed(pk, now=now, status=W.STARTING)
    if warm is None:
        return outcome
    lab_id = ""
    try:
        creds = _creds(warm)
        ports = warm_lab_ports_allocate(warm_lab=warm)
        lab_id = _ensure_lab(warm, creds, ports)
        nodes = cml.cml_lab_nodes(**creds, lab_id=lab_id)
        if any(node.state in instantiate.NOT_STARTED for node in nodes):
            cml.cml_lab_start(**creds, lab_id=lab_id, wait=False)
            nodes = cml.cml_lab_nodes(**creds, lab_id=lab_id)
    except (cml.CmlError, Conflict, TopologyRefused) as exc:
        if isinstance(exc, cml.CmlError) and exc.kind == cml.CmlError.NOT_FOUND and lab_id:
            warm_lab_forget_lab(warm_lab_pk=pk, lab_id=lab_id)
        detail = exc.detail if isinstance(exc, Conflict) else str(exc)
        attempts = warm_lab_release(warm_lab_pk=pk, until=until, error=detail)
        if isinstance(exc, TopologyRefused) or attempts >= settings.LIFECYCLE_MAX_ATTEMPTS:
            warm_lab_recycle(warm_lab_pk=pk, actor=actor, reason=f"{FAILED_REASON} {detail}")
            return "failed"
        return "retry"
    booted = sum(1 for node in nodes if node.state == instantiate.BOOTED)
    if nodes and booted == len(nodes):
        warm_lab_transition(warm_lab_pk=pk, to=W.READY, actor=actor, changes={"claimed_until": None},
                            reason=f"all {len(nodes)} node(s) of lab {lab_id} booted",
                            metadata={"boot_seconds": round((timezone.now() - warm.created_at).total_seconds(), 1)})
        return "ready"
    warm_lab_release(warm_lab_pk=pk, until=until)
    return "booting"


def remove_recycling(pk: int, *, now: datetime, actor: str) -> str:
    """Delete a RECYCLING warm lab's lab from CML (by id and by title) → RECYCLED."""
    warm, until, outcome = _claimed(pk, now=now, status=W.RECYCLING)
    if warm is None:
        return outcome
    if warm.worker.status not in GONE and warm.worker.status != WorkerStatus.RUNNING:
        warm_lab_release(warm_lab_pk=pk, until=until)  # CML is down with its worker: deleted once it runs again
        return "waiting"
    if warm.worker.status not in GONE:  # a lab on a terminated or failed worker went with it
        try:
            creds = _creds(warm)
            ids = [warm.cml_lab_id] if warm.cml_lab_id else []
            ids += [i for i in cml.cml_lab_ids_by_title(**creds, title=warm.public_id) if i not in ids]
            for lab_id in ids:
                cml.cml_lab_delete(**creds, lab_id=lab_id, force=True, missing_ok=True)
        except (cml.CmlError, Conflict) as exc:
            warm_lab_release(warm_lab_pk=pk, until=until, error=exc.detail if isinstance(exc, Conflict) else str(exc))
            return "retry"
    warm_lab_recycled(warm_lab_pk=pk, actor=actor)
    return "recycled"


def warm_pool_tick(*, now: datetime | None = None, actor: str = "system") -> dict:
    """One pass over every warm pool; counts of what it did."""
    now = now or timezone.now()
    report: Counter = Counter()
    pooled = Q(warm_pool_depth__gt=0) | Q(pk__in=WarmLab.objects.filter(status__in=POOLED).values("definition"))
    definitions = list(LabletDefinition.objects.filter(pooled).annotate(last_started=Max("instances__running_at")))
    for definition in definitions:
        try:
            _decide(definition, definition.last_started, now, actor, report)
        except Exception:  # noqa: BLE001 - one pool's trouble must not stop the others
            log.exception("warm pool of %s: the decision failed", definition.public_id)
            report["errors"] += 1
    claimable = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    batch = settings.LIFECYCLE_TICK_BATCH
    steps = ((W.STARTING, advance_starting, "warm_ready", "ready"),
             (W.RECYCLING, remove_recycling, "warm_removed", "recycled"))
    for status, step, key, done in steps:
        for pk in WarmLab.objects.filter(claimable, status=status).order_by("pk").values_list("pk", flat=True)[:batch]:
            try:
                if step(pk, now=now, actor=actor) == done:
                    report[key] += 1
            except Exception:  # noqa: BLE001 - one lab's trouble must not stop the others
                log.exception("warm pool: %s of warm lab %s failed", step.__name__, pk)
                report["errors"] += 1
    return {key: count for key, count in report.items() if count}
