"""Deciding that an instance ends (terminate requested, slot over, idle, expired, failed): database only.

PENDING / SCHEDULED instances (no lab can exist yet), and instances without a worker, go straight to
TERMINATED. Instances that may have a lab (INSTANTIATING, RUNNING, COLLECTING, GRADING) go to
STOPPING and the teardown (`teardown.py`) takes them through STOPPED and ARCHIVED to TERMINATED.
Instances already in the teardown just keep going. `termination_reason` keeps the first reason.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from apps.lablets.lifecycle import FAILED_REASON, WITH_LAB
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance
from apps.lablets.services.instances import lablet_instance_transition
from apps.lablets.services.lease import lease_clear, lease_restart
from apps.lablets.services.ports import console_ports_release
from apps.lablets.services.steps import lablet_instance_record_lab_removed, lablet_instance_record_termination_reason
from apps.workers.models import WorkerStatus
from apps.core.errors import InvalidTransition

from .common import load, log


def request_end(pk: int, *, reason: str, actor: str, now: datetime) -> tuple[LabletInstance, str]:
    """Record that the instance must end. Returns (instance, what changed: TERMINATED, STOPPING or "").
    InvalidTransition when it is already terminated."""
    with transaction.atomic():
        locked = (LabletInstance.objects.select_for_update(of=("self",)).select_related("definition", "worker")
                  .get(pk=pk))
        source = locked.status
        if source == S.TERMINATED:
            raise InvalidTransition("Lablet instance", locked.public_id, source, S.TERMINATED)
        lablet_instance_record_termination_reason(instance_pk=pk, reason=reason)  # unless one is recorded
        no_lab = source in (S.PENDING, S.SCHEDULED)
        unreachable = locked.worker is None or locked.worker.status == WorkerStatus.TERMINATED
        if no_lab or unreachable:
            if unreachable and locked.instantiating_at is not None:
                lablet_instance_record_lab_removed(instance_pk=pk, at=now)  # its CML went away with the worker
            lease_clear(pk)
            instance = lablet_instance_transition(instance=locked, to=S.TERMINATED, actor=actor,
                                                  reason=locked.termination_reason or reason)
            console_ports_release(instance=instance)
            return instance, S.TERMINATED
        if source in WITH_LAB:
            lease_restart(pk, step="stopping lab")
            return lablet_instance_transition(instance=locked, to=S.STOPPING, actor=actor, reason=reason), S.STOPPING
        return load(pk), ""  # already in the teardown


def end_quietly(pk: int, *, reason: str, actor: str, now: datetime) -> str:
    """request_end for the tick: a decision made stale by another process is a log line ("").
    Otherwise returns the state reached (TERMINATED frees capacity at once, STOPPING starts the teardown)."""
    try:
        _, reached = request_end(pk, reason=reason, actor=actor, now=now)
    except InvalidTransition as exc:
        log.info("lifecycle: stale end of instance %s (%s): %s", pk, reason, exc)
        return ""
    return reached


def give_up(pk: int, *, actor: str, now: datetime, error: str) -> None:
    """A step failed LIFECYCLE_MAX_ATTEMPTS times: the instance ends now, capacity freed. A lab it may
    have left on CML is deleted by the cleanup sweep (teardown.cleanup) as soon as CML answers."""
    reason = f"{FAILED_REASON} {error}"[:200]
    with transaction.atomic():
        locked = LabletInstance.objects.select_for_update(of=("self",)).get(pk=pk)
        if locked.status == S.TERMINATED:
            return
        lablet_instance_record_termination_reason(instance_pk=pk, reason=reason)  # unless one is recorded
        lease_clear(pk)
        instance = lablet_instance_transition(instance=locked, to=S.TERMINATED, actor=actor, reason=reason)
        console_ports_release(instance=instance)
