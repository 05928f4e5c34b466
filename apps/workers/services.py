"""All writes to workers. Views, admin actions, jobs and commands call these, nothing else."""

import re

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.workers.lifecycle import TRANSITIONS
from apps.workers.models import Worker, WorkerStatus
from labmanager.errors import Conflict, InvalidTransition, ValidationFailed

AWS_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")

# Declared capacity of the instance types CML workers usually run on (cpu, memory GB, storage GB, max nodes).
KNOWN_INSTANCE_TYPES = {
    "m5zn.metal": (48, 192, 500, 100),
    "m5.metal": (96, 384, 1000, 200),
    "c5.metal": (96, 192, 1000, 150),
    "m5.4xlarge": (16, 64, 250, 30),
    "m5.2xlarge": (8, 32, 150, 15),
    "c5.2xlarge": (8, 16, 150, 10),
}
CAPACITY_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "max_nodes")


@transaction.atomic
def worker_transition(*, worker: Worker, to: str, actor: str, reason: str = "") -> Worker:
    """The only place a worker's status changes: checks the edge, stamps, audits."""
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    source = locked.status
    if to not in TRANSITIONS[source]:
        raise InvalidTransition("Worker", locked.public_id, source, to)
    locked.status = to
    locked.status_changed_at = timezone.now()
    locked.save(update_fields=["status", "status_changed_at", "updated_at"])
    audit_record(
        event_type=f"worker.{to}",
        actor=actor,
        resource_type="worker",
        resource_id=locked.public_id,
        action="worker.transition",
        metadata={"from": source, "to": to, "reason": reason},
    )
    return locked


def _capacity(instance_type: str, capacity: dict | None) -> dict:
    capacity = dict(capacity or {})
    defaults = KNOWN_INSTANCE_TYPES.get(instance_type)
    missing = [f for f in CAPACITY_FIELDS if f not in capacity]
    if missing and defaults is None:
        raise ValidationFailed(
            f"Instance type '{instance_type}' has no known capacity; send capacity.{', capacity.'.join(missing)}.",
            errors={f"capacity.{f}": ["This field is required for an unknown instance type."] for f in missing},
        )
    for field, default in zip(CAPACITY_FIELDS, defaults or (0, 0, 0, 0)):
        capacity.setdefault(field, default)
    return {f: capacity[f] for f in CAPACITY_FIELDS}


def worker_create(
    *,
    actor: str,
    name: str = "",
    aws_instance_id: str = "",
    aws_region: str = "us-west-2",
    instance_type: str = "m5zn.metal",
    capacity: dict | None = None,
) -> Worker:
    """Import an existing EC2 instance (aws_instance_id given) or launch a new worker (name given).

    EC2 is not called yet (the workers issue adds the boto3 gateway here); until then the
    record is the source of truth and the worker is confirmed running at once.
    """
    if aws_instance_id and not AWS_INSTANCE_ID.match(aws_instance_id):
        raise ValidationFailed(
            "aws_instance_id must look like i-0abc123def456789.",
            errors={"aws_instance_id": ["Not an EC2 instance id."]},
        )
    mode = "import" if aws_instance_id else "launch"
    fields = {
        "name": name or aws_instance_id,
        "aws_instance_id": aws_instance_id,
        "aws_region": aws_region,
        "instance_type": instance_type,
        **_capacity(instance_type, capacity),
    }
    try:
        with transaction.atomic():
            worker = Worker.objects.create(**fields)
            audit_record(
                event_type="worker.created",
                actor=actor,
                resource_type="worker",
                resource_id=worker.public_id,
                action=f"worker.{mode}",
                metadata={"after": {**fields, "status": worker.status}},
            )
    except IntegrityError:
        raise Conflict(f"EC2 instance {aws_instance_id} in {aws_region} is already a worker.")
    return worker_transition(worker=worker, to=WorkerStatus.RUNNING, actor=actor, reason=f"{mode} confirmed")


def worker_start(*, worker: Worker, actor: str) -> Worker:
    worker = worker_transition(worker=worker, to=WorkerStatus.PENDING, actor=actor, reason="start requested")
    return worker_transition(worker=worker, to=WorkerStatus.RUNNING, actor=actor, reason="start confirmed")


def worker_stop(*, worker: Worker, actor: str) -> Worker:
    if worker.status != WorkerStatus.RUNNING:
        raise InvalidTransition("Worker", worker.public_id, worker.status, WorkerStatus.STOPPING)
    worker = worker_transition(worker=worker, to=WorkerStatus.STOPPING, actor=actor, reason="stop requested")
    return worker_transition(worker=worker, to=WorkerStatus.STOPPED, actor=actor, reason="stop confirmed")


def worker_terminate(*, worker: Worker, actor: str) -> Worker:
    return worker_transition(worker=worker, to=WorkerStatus.TERMINATED, actor=actor, reason="terminate requested")
