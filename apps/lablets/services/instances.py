"""Lablet instances: creation and the lifecycle, enforced in one function."""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.lablets.lifecycle import EXTENDABLE, STAMP_FIELD, TRANSITIONS
from apps.lablets.models import InstanceStatus, LabletDefinition, LabletInstance
from labmanager.errors import Conflict, InvalidTransition, ValidationFailed


def _event(instance: LabletInstance, *, event_type: str, actor: str, action: str, metadata: dict) -> None:
    audit_record(
        event_type=event_type,
        actor=actor,
        resource_type="lablet_instance",
        resource_id=instance.public_id,
        action=action,
        metadata={
            "definition_id": instance.definition.public_id,
            "owner_id": instance.owner_id,
            "worker_id": instance.worker.public_id if instance.worker_id else None,
            **metadata,
        },
    )


@transaction.atomic
def lablet_instance_transition(*, instance: LabletInstance, to: str, actor: str, reason: str = "") -> LabletInstance:
    """The only place an instance's status changes: checks the edge against TRANSITIONS,
    stamps the time of the state reached, and records the change, in one transaction."""
    locked = (
        LabletInstance.objects.select_for_update(of=("self",))
        .select_related("definition", "worker")
        .get(pk=instance.pk)
    )
    source = locked.status
    if to not in TRANSITIONS[source]:
        raise InvalidTransition("Lablet instance", locked.public_id, source, to)
    locked.status = to
    stamp = STAMP_FIELD[to]
    setattr(locked, stamp, timezone.now())
    locked.save(update_fields=["status", stamp, "updated_at"])
    _event(
        locked,
        event_type=f"lablet_instance.{to}",
        actor=actor,
        action="lablet_instance.transition",
        metadata={"from": source, "to": to, "reason": reason},
    )
    return locked


def _check_timeslot(definition: LabletDefinition, start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValidationFailed(
            "timeslot_end must be after timeslot_start.",
            errors={"timeslot_end": ["Must be after timeslot_start."]},
        )
    minutes = (end - start).total_seconds() / 60
    if minutes > definition.max_duration_minutes:
        raise ValidationFailed(
            f"The timeslot lasts {minutes:g} minutes; lablet definition {definition.public_id} allows at most "
            f"{definition.max_duration_minutes}.",
            errors={"timeslot_end": [f"Duration exceeds max_duration_minutes ({definition.max_duration_minutes})."]},
        )


def lablet_instance_create(
    *,
    actor: str,
    user=None,
    definition_id: str,
    owner_id: str,
    timeslot_start: datetime,
    timeslot_end: datetime | None = None,
    reservation_id: str = "",
    priority: int = 5,
) -> LabletInstance:
    definition = LabletDefinition.objects.filter(public_id=definition_id).first()
    if definition is None:
        raise ValidationFailed(
            f"Lablet definition {definition_id} does not exist.",
            errors={"definition_id": ["Unknown lablet definition."]},
        )
    if not definition.is_active:
        raise ValidationFailed(
            f"Lablet definition {definition_id} is deprecated and takes no new instances.",
            errors={"definition_id": ["Deprecated lablet definition."]},
        )
    if timeslot_end is None:
        timeslot_end = timeslot_start + timedelta(minutes=definition.default_duration_minutes)
    _check_timeslot(definition, timeslot_start, timeslot_end)
    with transaction.atomic():
        instance = LabletInstance.objects.create(
            definition=definition,
            owner_id=owner_id,
            created_by=user,
            timeslot_start=timeslot_start,
            timeslot_end=timeslot_end,
            reservation_id=reservation_id,
            priority=priority,
        )
        _event(
            instance,
            event_type="lablet_instance.created",
            actor=actor,
            action="lablet_instance.create",
            metadata={
                "after": {
                    "status": instance.status,
                    "timeslot_start": timeslot_start.isoformat(),
                    "timeslot_end": timeslot_end.isoformat(),
                    "priority": priority,
                    "reservation_id": reservation_id,
                }
            },
        )
    return instance


def lablet_instance_start_collection(*, instance: LabletInstance, actor: str) -> LabletInstance:
    return lablet_instance_transition(instance=instance, to=InstanceStatus.COLLECTING, actor=actor, reason="collection requested")


def lablet_instance_start_grading(*, instance: LabletInstance, actor: str) -> LabletInstance:
    return lablet_instance_transition(instance=instance, to=InstanceStatus.GRADING, actor=actor, reason="grading requested")


def lablet_instance_terminate(*, instance: LabletInstance, actor: str, reason: str = "terminate requested") -> LabletInstance:
    return lablet_instance_transition(instance=instance, to=InstanceStatus.TERMINATED, actor=actor, reason=reason)


@transaction.atomic
def lablet_instance_extend(
    *, instance: LabletInstance, actor: str, minutes: int | None = None, timeslot_end: datetime | None = None
) -> LabletInstance:
    """Move the end of the timeslot later, within the definition's max duration."""
    locked = (
        LabletInstance.objects.select_for_update(of=("self",))
        .select_related("definition", "worker")
        .get(pk=instance.pk)
    )
    if locked.status not in EXTENDABLE:
        raise Conflict(f"Lablet instance {locked.public_id} is {locked.status}; only live instances can be extended.")
    new_end = timeslot_end or locked.timeslot_end + timedelta(minutes=minutes or 0)
    if new_end <= locked.timeslot_end:
        raise ValidationFailed(
            "An extension must move timeslot_end later.",
            errors={"timeslot_end": [f"Must be after the current end {locked.timeslot_end.isoformat()}."]},
        )
    _check_timeslot(locked.definition, locked.timeslot_start, new_end)
    old_end = locked.timeslot_end
    locked.timeslot_end = new_end
    locked.save(update_fields=["timeslot_end", "updated_at"])
    _event(
        locked,
        event_type="lablet_instance.extended",
        actor=actor,
        action="lablet_instance.extend",
        metadata={"before": {"timeslot_end": old_end.isoformat()}, "after": {"timeslot_end": new_end.isoformat()}},
    )
    return locked
