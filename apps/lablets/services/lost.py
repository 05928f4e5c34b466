"""An instance whose lab was lost behind LabManager's back: its worker terminated outside LabManager, or its
CML lab deleted on CML. The fleet's reconciliation (apps.fleet.reconcile) finds them; this decides and writes.

- The slot has not begun and the instance is instantiating or running: it goes back to PENDING (worker, lab
  and console forgotten, ports released, the engine's bookkeeping cleared) and the scheduler places it again.
- Otherwise it ends as lost: `termination_reason` = `lost: <cause>`, then the usual end
  (lablet_instance_terminate: straight to terminated when the worker is gone, else through the teardown,
  which finds the lab gone and still archives what the instance had).

Either way `lablet_instance.lost` is journalled (the CloudEvent `io.lablet.instance.lost`) with the cause
and the outcome. A decision made stale meanwhile (the instance moved on, changed lab or worker, or an
engine step holds it) writes nothing.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.lablets.lifecycle import LOST_REASON, REPLACEABLE
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.services.instances import lablet_instance_terminate, lablet_instances_transition_many
from apps.lablets.services.journal import instance_audit
from apps.lablets.services.lease import lease_clear
from apps.lablets.services.ports import console_ports_release
from apps.lablets.services.steps import lablet_instance_record_termination_reason
from apps.core.errors import InvalidTransition

RE_PLACED = "re_placed"
ENDED = "ended"
STALE = "stale"


def lost_reason(cause: str) -> str:
    """`lost: <cause>` (the termination reason of an instance ended as lost)."""
    return f"{LOST_REASON} {cause}"[:200]


def _still_as_seen(locked: LabletInstance, *, status: str, worker_id: int | None, cml_lab_id: str) -> bool:
    held = locked.claimed_until is not None and locked.claimed_until > timezone.now()  # an engine step is on it
    return (not held and locked.status == status and locked.worker_id == worker_id
            and locked.cml_lab_id == cml_lab_id)


def lablet_instance_lost(*, instance_pk: int, cause: str, status: str, worker_id: int | None, cml_lab_id: str,
                         actor: str = "system", now: datetime | None = None) -> str:
    """The instance (as the caller saw it: `status`, `worker_id`, `cml_lab_id`) lost its lab for `cause`
    ('worker terminated outside LabManager', 'CML lab deleted'). Returns 're_placed', 'ended' or 'stale'."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = (LabletInstance.objects.select_for_update(of=("self",)).select_related("definition", "worker")
                  .get(pk=instance_pk))
        if not _still_as_seen(locked, status=status, worker_id=worker_id, cml_lab_id=cml_lab_id):
            return STALE
        metadata = {"cause": cause, "from": locked.status, "lost_worker_id": locked.worker.public_id
                    if locked.worker_id else None, "lost_cml_lab_id": cml_lab_id or None}
        if locked.status in REPLACEABLE and locked.timeslot_start > now:
            instance_audit(locked, event_type="lablet_instance.lost", actor=actor, action="lablet_instance.lost",
                           metadata={**metadata, "outcome": RE_PLACED})
            lease_clear(locked.pk)
            console_ports_release(instance=locked)
            lablet_instances_transition_many(
                instances=[locked], to=InstanceStatus.PENDING, actor=actor,
                reason=f"{cause} before the slot began: placing it again",
                changes={locked.pk: {"worker": None, "cml_lab_id": "", "instantiating_at": None, "running_at": None}})
            LabletInstance.objects.filter(pk=locked.pk).update(console=[])  # the lab's consoles went with it
            outcome = RE_PLACED
        else:
            lablet_instance_record_termination_reason(instance_pk=locked.pk, reason=lost_reason(cause))
            instance_audit(locked, event_type="lablet_instance.lost", actor=actor, action="lablet_instance.lost",
                           metadata={**metadata, "outcome": ENDED})
            outcome = ENDED
    if outcome == RE_PLACED:
        from apps.lablets.services.scheduling import lablet_instances_schedule_pending

        lablet_instances_schedule_pending(actor=actor, now=now)
        return outcome
    # The end, after the commit (its teardown calls CML and S3): the reason recorded above is kept.
    try:
        lablet_instance_terminate(instance=locked, actor=actor, reason=lost_reason(cause))
    except InvalidTransition:  # it ended meanwhile: nothing more to do
        pass
    return outcome
