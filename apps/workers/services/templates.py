"""Worker templates: how new workers are launched."""

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.workers.models import WorkerTemplate
from apps.core.errors import Conflict

FIELDS = ("name", "instance_type", "ami_id", "launch_template_id", "aws_region", "cpu_cores", "memory_gb",
          "storage_gb", "max_nodes", "license_tier", "cost_per_hour")


def _snapshot(template: WorkerTemplate) -> dict:
    return {f: str(getattr(template, f)) for f in FIELDS}


def worker_template_create(*, actor: str, data: dict) -> WorkerTemplate:
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
