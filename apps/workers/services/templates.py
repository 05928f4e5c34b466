"""Worker templates: how new workers are launched."""

from datetime import datetime

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.workers.models import WorkerTemplate
from apps.core.errors import Conflict, ValidationFailed

FIELDS = ("name", "instance_type", "ami_id", "launch_template_id", "aws_region", "cpu_cores", "memory_gb",
          "storage_gb", "max_nodes", "license_tier", "cost_per_hour", "scalable", "availability_zones", "subnet_ids",
          "fallback_instance_types", "min_workers", "max_workers", "max_cost_per_day")
# The measured boot time is a moving average: each new measurement weighs this much (the first is taken as is).
BOOT_WEIGHT = 0.3


def _snapshot(template: WorkerTemplate) -> dict:
    return {f: str(getattr(template, f)) for f in FIELDS}


LIST_FIELDS = ("availability_zones", "subnet_ids", "fallback_instance_types")


def _check_lists(data: dict) -> None:
    """The placement lists are lists of names (the API's serializer checks it too; the admin's JSON fields
    take any JSON)."""
    errors = {name: ["A list of names, e.g. [\"us-west-2a\", \"us-west-2b\"]."] for name in LIST_FIELDS
              if name in data and not (isinstance(data[name], list)
                                       and all(isinstance(v, str) and v.strip() for v in data[name]))}
    if errors:
        raise ValidationFailed("Zones, subnets and fallback instance types are lists of names.", errors=errors)


def worker_template_create(*, actor: str, data: dict) -> WorkerTemplate:
    _check_lists(data)
    try:
        with transaction.atomic():
            template = WorkerTemplate.objects.create(**{k: v for k, v in data.items() if k in FIELDS})
            audit_record(event_type="worker_template.created", actor=actor, resource_type="worker_template",
                         resource_id=template.public_id, action="worker_template.create",
                         metadata={"after": _snapshot(template)})
    except IntegrityError:
        raise Conflict(f"A worker template named '{data.get('name')}' already exists.")
    return template


def worker_template_update(*, template: WorkerTemplate, actor: str, data: dict) -> WorkerTemplate:
    _check_lists(data)
    try:
        with transaction.atomic():
            locked = WorkerTemplate.objects.select_for_update().get(pk=template.pk)
            before = _snapshot(locked)
            for key, value in data.items():
                if key in FIELDS:
                    setattr(locked, key, value)
            locked.save()
            audit_record(event_type="worker_template.updated", actor=actor, resource_type="worker_template",
                         resource_id=locked.public_id, action="worker_template.update",
                         metadata={"before": before, "after": _snapshot(locked)})
    except IntegrityError:
        raise Conflict(f"A worker template named '{data.get('name')}' already exists.")
    return locked


def worker_template_record_boot(*, template_id: int, started_at: datetime, available_at: datetime) -> float | None:
    """Fold one boot (launch or start → CML available) into the template's measured boot time (a moving
    average); called by the CML health poll when a booting worker's CML first answers as available.
    Returns the new boot_seconds (None when the template is gone). Inside the caller's transaction."""
    seconds = max(0.0, (available_at - started_at).total_seconds())
    locked = WorkerTemplate.objects.select_for_update().filter(pk=template_id).first()
    if locked is None:
        return None
    before = locked.boot_seconds
    locked.boot_seconds = seconds if before is None else round(BOOT_WEIGHT * seconds + (1 - BOOT_WEIGHT) * before, 1)
    locked.boot_samples += 1
    locked.save(update_fields=["boot_seconds", "boot_samples", "updated_at"])
    audit_record(event_type="worker_template.boot_measured", actor="system", resource_type="worker_template",
                 resource_id=locked.public_id, action="worker_template.boot_measured",
                 metadata={"measured_seconds": round(seconds, 1), "before": before,
                           "boot_seconds": locked.boot_seconds, "samples": locked.boot_samples})
    return locked.boot_seconds
