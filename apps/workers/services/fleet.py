"""Workers as EC2 instances: the status lifecycle, import, launch, start, stop, terminate, drain.

EC2 calls happen between committed transitions, never inside a transaction (STYLE.md).
"""

import logging
import re

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.workers import ec2
from apps.workers.lifecycle import TRANSITIONS
from apps.workers.models import Worker, WorkerRunPeriod, WorkerStatus, WorkerTemplate
from apps.workers import ledger
from apps.workers.signals import worker_withdrawn
from apps.core.encryption import encrypt
from apps.core.errors import Conflict, DomainError, InvalidTransition, UpstreamUnavailable, ValidationFailed

log = logging.getLogger(__name__)

AWS_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")

# Capacity overrides (cpu, memory GB, storage GB, max nodes): these win over what EC2 says. Every other
# instance type gets its vCPUs and memory from EC2's DescribeInstanceTypes (ec2.ec2_instance_type, cached),
# its storage from the instance store or DEFAULT_STORAGE_GB, its max nodes from its memory
# (MEMORY_GB_PER_NODE). A worker's `capacity` in the request, or its template, wins over both.
KNOWN_INSTANCE_TYPES = {
    "m5zn.metal": (48, 192, 500, 100),
    "m5.metal": (96, 384, 1000, 200),
    "c5.metal": (96, 192, 1000, 150),
    "m5.4xlarge": (16, 64, 250, 30),
    "m5.2xlarge": (8, 32, 150, 15),
    "c5.2xlarge": (8, 16, 150, 10),
}
DEFAULT_STORAGE_GB = 250  # EBS-only types: the root volume CML workers are usually given
MEMORY_GB_PER_NODE = 2  # CML nodes per GB of memory, for max_nodes of a type not in the table
CAPACITY_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "max_nodes")

EC2_TO_WORKER = {
    "pending": WorkerStatus.PENDING,
    "running": WorkerStatus.RUNNING,
    "stopping": WorkerStatus.STOPPING,
    "stopped": WorkerStatus.STOPPED,
    "shutting-down": WorkerStatus.TERMINATED,
    "terminated": WorkerStatus.TERMINATED,
}


def _audit(worker: Worker, *, event_type: str, actor: str, action: str, metadata: dict, success=True, error=""):
    audit_record(
        event_type=event_type,
        actor=actor,
        resource_type="worker",
        resource_id=worker.public_id,
        action=action,
        success=success,
        error=error,
        metadata=metadata,
    )


def _record_run_period(worker: Worker, *, source: str, to: str, at) -> None:
    """Running-hours (apps.lablets.services.fleet_cost): a period opens on entering RUNNING, closes on leaving it."""
    if to == WorkerStatus.RUNNING and source != WorkerStatus.RUNNING:
        WorkerRunPeriod.objects.create(worker=worker, started_at=at)
    elif source == WorkerStatus.RUNNING and to != WorkerStatus.RUNNING:
        WorkerRunPeriod.objects.filter(worker=worker, ended_at__isnull=True).update(ended_at=at)


@transaction.atomic
def worker_transition(*, worker: Worker, to: str, actor: str, reason: str = "") -> Worker:
    """The only place a worker's status changes: checks the edge, stamps, audits."""
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    source = locked.status
    if to not in TRANSITIONS[source]:
        raise InvalidTransition("Worker", locked.public_id, source, to)
    locked.status = to
    locked.status_changed_at = timezone.now()
    columns = ["status", "status_changed_at", "updated_at"]
    if to == WorkerStatus.PENDING:  # a boot begins: the CML health poll measures it (WorkerTemplate.boot_seconds)
        locked.boot_started_at = locked.status_changed_at
        columns.append("boot_started_at")
    locked.save(update_fields=columns)
    _record_run_period(locked, source=source, to=to, at=locked.status_changed_at)
    _audit(locked, event_type=f"worker.{to}", actor=actor, action="worker.transition",
           metadata={"from": source, "to": to, "reason": reason})
    if to in (WorkerStatus.FAILED, WorkerStatus.TERMINATED):
        # Re-placement, after this commits (its own transactions): the scheduled instances of a worker
        # that can no longer host them are placed again elsewhere.
        transaction.on_commit(lambda: _replace_scheduled(locked, actor=actor, why=f"worker {to}"))
    return locked


def _replace_scheduled(worker: Worker, *, actor: str, why: str) -> None:
    """The scheduler (a receiver of worker_withdrawn) places elsewhere what was scheduled on the worker."""
    for _receiver, outcome in worker_withdrawn.send_robust(sender=Worker, worker=worker, actor=actor, reason=why):
        if isinstance(outcome, Exception):  # the worker's change is committed; the next scheduler pass retries
            log.error("Re-placement after %s of %s failed: %r", why, worker.public_id, outcome)  # traceback: django.dispatch


def _ec2_failed(worker: Worker | None, exc: ec2.Ec2Error, *, actor: str, action: str, field: str = "") -> DomainError:
    """Record a refused or failed EC2 call and turn it into the matching domain error."""
    if worker is not None:
        _audit(worker, event_type="worker.ec2_failed", actor=actor, action=action, success=False, error=str(exc),
               metadata={"code": exc.code})
    else:
        audit_record(event_type="worker.ec2_failed", actor=actor, resource_type="worker", resource_id="-",
                     action=action, success=False, error=str(exc), metadata={"code": exc.code})
    if isinstance(exc, ec2.Ec2NotFound):
        return ValidationFailed(str(exc), errors={field: [str(exc)]} if field else None)
    if isinstance(exc, ec2.Ec2CapacityError):
        return Conflict(str(exc))
    return UpstreamUnavailable(str(exc))


def _record_ec2_facts(worker: Worker, info: ec2.InstanceInfo) -> None:
    """Addresses and type as EC2 reports them (not the status: that goes through worker_transition).
    Written only when they differ from the record in hand."""
    facts = {
        "aws_instance_id": info.instance_id,
        "ip_address": info.public_ip,
        "private_ip_address": info.private_ip,
        "instance_type": info.instance_type or worker.instance_type,
    }
    if any(getattr(worker, key) != value for key, value in facts.items()):
        Worker.objects.filter(pk=worker.pk).update(**facts, last_ec2_sync_at=timezone.now())
        for key, value in facts.items():
            setattr(worker, key, value)


def worker_apply_ec2_state(*, worker: Worker, info: ec2.InstanceInfo, actor: str, reason: str,
                           fresh: bool = False) -> Worker:
    """Bring the record in line with what EC2 reports. Stale or impossible edges are logged, not raised.
    `fresh=True`: the caller has just read `worker` (the sync), so it is not read again."""
    _record_ec2_facts(worker, info)
    target = EC2_TO_WORKER.get(info.state)
    if not fresh:
        worker.refresh_from_db()
    if target is None or target == worker.status:
        return worker
    if target not in TRANSITIONS[worker.status]:
        log.warning("Worker %s: EC2 says %s, record says %s; no such edge", worker.public_id, info.state, worker.status)
        return worker
    return worker_transition(worker=worker, to=target, actor=actor, reason=reason)


def _instance_type_capacity(instance_type: str, region: str, *, actor: str) -> tuple:
    """(cpu, memory GB, storage GB, max nodes) of a type not in KNOWN_INSTANCE_TYPES, from EC2."""
    try:
        info = ec2.ec2_instance_type(region=region, instance_type=instance_type)
    except ec2.Ec2Error as exc:
        error = _ec2_failed(None, exc, actor=actor, action="worker.instance_type", field="instance_type")
        if isinstance(error, UpstreamUnavailable):
            raise UpstreamUnavailable(
                f"Cannot read the capacity of instance type '{instance_type}' from EC2 ({exc}); send "
                "capacity.cpu_cores, capacity.memory_gb, capacity.storage_gb and capacity.max_nodes, or retry.")
        raise error
    memory_gb = info.memory_mib // 1024
    return (info.vcpus, memory_gb, info.instance_storage_gb or DEFAULT_STORAGE_GB,
            max(1, memory_gb // MEMORY_GB_PER_NODE))


def _capacity(instance_type: str, capacity: dict | None, template: WorkerTemplate | None = None, *,
              region: str = "", actor: str = "system") -> dict:
    """The declared capacity of a new worker: what the request gives, else its template's, else the
    override table's, else EC2's DescribeInstanceTypes (asked only when a field is missing)."""
    capacity = dict(capacity or {})
    missing = [f for f in CAPACITY_FIELDS if f not in capacity]
    if not missing:
        return {f: capacity[f] for f in CAPACITY_FIELDS}
    if template is not None:
        defaults = tuple(getattr(template, f) for f in CAPACITY_FIELDS)
    else:
        defaults = KNOWN_INSTANCE_TYPES.get(instance_type)
    if defaults is None and not instance_type:
        raise ValidationFailed(
            f"No instance type to read the capacity of; send capacity.{', capacity.'.join(missing)}.",
            errors={f"capacity.{f}": ["This field is required without an instance type."] for f in missing},
        )
    if defaults is None:
        defaults = _instance_type_capacity(instance_type, region or settings.AWS_REGION, actor=actor)
    for field, default in zip(CAPACITY_FIELDS, defaults):
        capacity.setdefault(field, default)
    return {f: capacity[f] for f in CAPACITY_FIELDS}


def _create_record(*, actor: str, mode: str, fields: dict) -> Worker:
    try:
        with transaction.atomic():
            worker = Worker.objects.create(**fields)
            _audit(worker, event_type="worker.created", actor=actor, action=f"worker.{mode}",
                   metadata={"after": {k: str(v) for k, v in fields.items()} | {"status": worker.status}})
    except IntegrityError:
        raise Conflict(f"EC2 instance {fields.get('aws_instance_id')} in {fields.get('aws_region')} is already a worker.")
    return worker


def worker_import(*, actor: str, aws_instance_id: str, aws_region: str, name: str = "", capacity: dict | None = None,
                  info: ec2.InstanceInfo | None = None) -> Worker:
    """Adopt an existing EC2 instance: check it exists, record it, tag it as ours, take its state."""
    if not AWS_INSTANCE_ID.match(aws_instance_id):
        raise ValidationFailed("aws_instance_id must look like i-0abc123def456789.",
                               errors={"aws_instance_id": ["Not an EC2 instance id."]})
    if Worker.objects.filter(aws_region=aws_region, aws_instance_id=aws_instance_id).exclude(
        status=WorkerStatus.TERMINATED
    ).exists():
        raise Conflict(f"EC2 instance {aws_instance_id} in {aws_region} is already a worker.")
    if info is None:
        try:
            info = ec2.ec2_describe(region=aws_region, instance_id=aws_instance_id)
        except ec2.Ec2Error as exc:
            raise _ec2_failed(None, exc, actor=actor, action="worker.import", field="aws_instance_id")
    if info.state in ("terminated", "shutting-down"):
        raise ValidationFailed(f"EC2 instance {aws_instance_id} is {info.state}.",
                               errors={"aws_instance_id": [f"The instance is {info.state}."]})
    worker = _create_record(actor=actor, mode="import", fields={
        "name": name or info.tags.get("Name") or aws_instance_id,
        "aws_instance_id": aws_instance_id,
        "aws_region": aws_region,
        "instance_type": info.instance_type,
        **_capacity(info.instance_type, capacity, region=aws_region, actor=actor),
    })
    if info.worker_id != worker.public_id:
        try:
            ec2.ec2_tag(region=aws_region, instance_id=aws_instance_id, worker_id=worker.public_id)
        except ec2.Ec2Error as exc:  # untagged still works: the sync also describes known ids
            _ec2_failed(worker, exc, actor=actor, action="worker.tag")
    return worker_apply_ec2_state(worker=worker, info=info, actor=actor, reason="imported from EC2")


def _launch_tries(instance_type: str, template: WorkerTemplate | None) -> list[tuple[str, dict]]:
    """(instance type, placement) pairs to try in order: each type (the template's own, then its fallbacks)
    in each of the template's subnets, else its availability zones, else wherever EC2 chooses."""
    types = [instance_type]
    if template is not None:
        types += [t for t in template.instance_types if t != instance_type]
    places: list[dict] = [{}]
    if template is not None and template.subnet_ids:
        places = [{"subnet_id": subnet} for subnet in template.subnet_ids]
    elif template is not None and template.availability_zones:
        places = [{"availability_zone": zone} for zone in template.availability_zones]
    return [(kind, place) for kind in types for place in places]


def worker_launch(*, actor: str, name: str, instance_type: str = "", aws_region: str = "",
                  template: WorkerTemplate | None = None, capacity: dict | None = None) -> Worker:
    """Launch a new EC2 instance from a template (or the configured AMI / launch template).

    When EC2 has no capacity (ec2.Ec2CapacityError: InsufficientInstanceCapacity, InstanceLimitExceeded,
    Unsupported, ...), the template's other subnets / availability zones and then its fallback instance types
    are tried in order (`_launch_tries`); each refusal is journalled (`worker.ec2_failed` with the type and
    place tried). Any other failure, or the last refusal, fails the worker."""
    instance_type = instance_type or (template.instance_type if template else "m5zn.metal")
    aws_region = aws_region or (template.aws_region if template else settings.AWS_REGION)
    image_id = (template.ami_id if template else "") or settings.WORKER_AMI_ID
    launch_template_id = (template.launch_template_id if template else "") or settings.WORKER_LAUNCH_TEMPLATE_ID
    if not image_id and not launch_template_id:
        raise ValidationFailed(
            "No AMI or launch template to launch from: set WORKER_AMI_ID or WORKER_LAUNCH_TEMPLATE_ID, "
            "or use a worker template that names one.",
            errors={"template_id": ["No AMI or launch template configured."]},
        )
    worker = _create_record(actor=actor, mode="launch", fields={
        "name": name, "aws_region": aws_region, "instance_type": instance_type, "template": template,
        "boot_started_at": timezone.now(),
        **_capacity(instance_type, capacity, template, region=aws_region, actor=actor),
    })
    tries = _launch_tries(instance_type, template)
    for number, (kind, place) in enumerate(tries, start=1):
        try:
            info = ec2.ec2_launch(region=aws_region, instance_type=kind, worker_id=worker.public_id, name=name,
                                  image_id=image_id, launch_template_id=launch_template_id, **place)
        except ec2.Ec2CapacityError as exc:
            if number < len(tries):
                _audit(worker, event_type="worker.ec2_failed", actor=actor, action="worker.launch", success=False,
                       error=str(exc), metadata={"code": exc.code, "instance_type": kind, **place, "try": number,
                                                 "tries": len(tries), "then": "the next zone or instance type"})
                continue
            raise _launch_failed(worker, exc, actor=actor)
        except ec2.Ec2Error as exc:
            raise _launch_failed(worker, exc, actor=actor)
        try:
            _record_ec2_facts(worker, info)
            info = ec2.ec2_describe(region=aws_region, instance_id=info.instance_id)  # pending, or already running
        except ec2.Ec2Error as exc:
            raise _launch_failed(worker, exc, actor=actor)
        where = ", ".join([kind, *place.values()])
        reason = "launched" if number == 1 else f"launched ({where}: try {number} of {len(tries)})"
        return worker_apply_ec2_state(worker=worker, info=info, actor=actor, reason=reason)
    raise AssertionError("unreachable: _launch_tries always yields one try")


def _launch_failed(worker: Worker, exc: ec2.Ec2Error, *, actor: str) -> DomainError:
    error = _ec2_failed(worker, exc, actor=actor, action="worker.launch")
    worker_transition(worker=worker, to=WorkerStatus.FAILED, actor=actor, reason=f"launch failed: {exc}")
    return error


def worker_create(*, actor: str, name: str = "", aws_instance_id: str = "", aws_region: str = "",
                  instance_type: str = "", template: WorkerTemplate | None = None,
                  capacity: dict | None = None) -> Worker:
    """POST /api/workers: import when `aws_instance_id` is given, otherwise launch."""
    if aws_instance_id:
        return worker_import(actor=actor, aws_instance_id=aws_instance_id,
                             aws_region=aws_region or settings.AWS_REGION, name=name, capacity=capacity)
    return worker_launch(actor=actor, name=name, instance_type=instance_type, aws_region=aws_region,
                         template=template, capacity=capacity)


def _ec2_action(worker: Worker, *, actor: str, call, verb: str, pending: str, rollback: str) -> Worker:
    """Move to `pending`, call EC2, then take the state EC2 reports; on failure go back to `rollback`."""
    worker = worker_transition(worker=worker, to=pending, actor=actor, reason=f"{verb} requested")
    return _ec2_confirm(worker, actor=actor, call=call, verb=verb, rollback=rollback)


def _ec2_confirm(worker: Worker, *, actor: str, call, verb: str, rollback: str) -> Worker:
    """Call EC2 for a worker already moved to its pending state, then take the state EC2 reports; on failure go
    back to `rollback`."""
    try:
        call(region=worker.aws_region, instance_id=worker.aws_instance_id)
        info = ec2.ec2_describe(region=worker.aws_region, instance_id=worker.aws_instance_id)
    except ec2.Ec2Error as exc:
        error = _ec2_failed(worker, exc, actor=actor, action=f"worker.{verb}")
        worker_transition(worker=worker, to=rollback, actor=actor, reason=f"{verb} failed: {exc}")
        raise error
    return worker_apply_ec2_state(worker=worker, info=info, actor=actor, reason=f"{verb} confirmed by EC2")


def _require_instance(worker: Worker, verb: str) -> None:
    if not worker.aws_instance_id:
        raise Conflict(f"Worker {worker.public_id} has no EC2 instance to {verb} (its launch failed); terminate it.")


def worker_start(*, worker: Worker, actor: str) -> Worker:
    _require_instance(worker, "start")
    rollback = worker.status if worker.status in (WorkerStatus.STOPPED, WorkerStatus.FAILED) else WorkerStatus.STOPPED
    return _ec2_action(worker, actor=actor, call=ec2.ec2_start, verb="start", pending=WorkerStatus.PENDING,
                       rollback=rollback)


def worker_stop(*, worker: Worker, actor: str) -> Worker:
    if worker.status != WorkerStatus.RUNNING:
        raise InvalidTransition("Worker", worker.public_id, worker.status, WorkerStatus.STOPPING)
    _require_instance(worker, "stop")
    return _ec2_action(worker, actor=actor, call=ec2.ec2_stop, verb="stop", pending=WorkerStatus.STOPPING,
                       rollback=WorkerStatus.RUNNING)


def worker_stop_decided(*, worker: Worker, actor: str) -> Worker:
    """EC2's stop of a worker that a decision already moved to STOPPING in its own transaction (the idle stop,
    apps.fleet.power: the decision and the state change commit together, so nothing is placed on the worker
    between them); back to RUNNING when EC2 refuses."""
    if worker.status != WorkerStatus.STOPPING:
        raise InvalidTransition("Worker", worker.public_id, worker.status, WorkerStatus.STOPPING)
    _require_instance(worker, "stop")
    return _ec2_confirm(worker, actor=actor, call=ec2.ec2_stop, verb="stop", rollback=WorkerStatus.RUNNING)


def worker_holdings(worker: Worker) -> dict:
    """What the worker holds from now on, of every kind (the capacity ledger, apps.workers.ledger): live
    lablet instances (running or booked ahead), session labs starting or running, warm labs."""
    return ledger.committed(worker)


def _holdings_text(held: dict) -> str:
    kinds = ((ledger.INSTANCE, "live lablet instance(s)"), (ledger.SESSION_LAB, "session lab(s)"),
             (ledger.WARM_LAB, "warm lab(s)"))
    return ", ".join(f"{held[kind]} {label}" for kind, label in kinds if held[kind])


def worker_terminate(*, worker: Worker, actor: str, force: bool = False) -> Worker:
    """Terminate the EC2 instance, then the record. Refused while it holds anything in the capacity ledger
    (live instances, session labs, warm labs) unless forced."""
    if worker.status == WorkerStatus.TERMINATED:
        raise InvalidTransition("Worker", worker.public_id, worker.status, WorkerStatus.TERMINATED)
    held = worker_holdings(worker)
    if held["holdings"] and not force:
        raise Conflict(f"Worker {worker.public_id} holds {_holdings_text(held)}; "
                       "drain it and wait, or terminate with force=true.")
    if worker.aws_instance_id:
        try:
            ec2.ec2_terminate(region=worker.aws_region, instance_id=worker.aws_instance_id)
        except ec2.Ec2NotFound:
            pass  # already gone from EC2: the record follows
        except ec2.Ec2Error as exc:
            raise _ec2_failed(worker, exc, actor=actor, action="worker.terminate")
    reason = f"terminate requested (force, {_holdings_text(held)})" if held["holdings"] else "terminate requested"
    return worker_transition(worker=worker, to=WorkerStatus.TERMINATED, actor=actor, reason=reason)


@transaction.atomic
def _set_draining(worker: Worker, *, actor: str, draining: bool) -> Worker:
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    if locked.status == WorkerStatus.TERMINATED:
        raise Conflict(f"Worker {locked.public_id} is terminated.")
    if locked.draining != draining:
        locked.draining = draining
        locked.save(update_fields=["draining", "updated_at"])
        verb = "drained" if draining else "undrained"
        _audit(locked, event_type=f"worker.{verb}", actor=actor, action=f"worker.{verb[:-2]}",
               metadata={"draining": draining})
    return locked


def worker_drain(*, worker: Worker, actor: str, force: bool = False) -> Worker:
    """No new placements on this worker; what runs there keeps running. With `force`, its SCHEDULED
    instances (not started yet) go back to the scheduler and are placed on other workers."""
    worker = _set_draining(worker, actor=actor, draining=True)
    if force:
        worker_withdrawn.send(sender=Worker, worker=worker, actor=actor, reason="worker drained with force")
    return worker


def worker_undrain(*, worker: Worker, actor: str) -> Worker:
    return _set_draining(worker, actor=actor, draining=False)


@transaction.atomic
def worker_update_capacity(*, worker: Worker, actor: str, capacity: dict) -> Worker:
    """Operators override the declared capacity."""
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    before = {f: getattr(locked, f) for f in CAPACITY_FIELDS}
    for field in CAPACITY_FIELDS:
        if field in capacity:
            setattr(locked, field, capacity[field])
    locked.save(update_fields=[*CAPACITY_FIELDS, "updated_at"])
    _audit(locked, event_type="worker.capacity_changed", actor=actor, action="worker.update_capacity",
           metadata={"before": before, "after": {f: getattr(locked, f) for f in CAPACITY_FIELDS}})
    return locked


CONNECTION_FIELDS = ("name", "cml_url", "cml_username", "cml_password", "cml_tls_verify", "console_host")


@transaction.atomic
def worker_update_connection(*, worker: Worker, actor: str, changes: dict) -> Worker:
    """Operators rename a worker or point it at its CML controller. `cml_password` is stored encrypted ("" clears
    it); the journal names the fields changed, never a credential's value. Turning TLS verification off or on
    is journalled with its value.

    The stored password goes only where it was entered for: a change of `cml_url`, or turning TLS
    verification off, clears it unless a new one is entered in the same change (journalled as a change of
    `cml_password`, with `cml_password_cleared`). Whoever may change the URL cannot send the stored password
    to a host of their choice."""
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    changed = {k: v for k, v in changes.items() if k in CONNECTION_FIELDS}
    changed = {k: v for k, v in changed.items() if k == "cml_password" or getattr(locked, k) != v}
    redirected = "cml_url" in changed or ("cml_tls_verify" in changed and locked.cml_tls_verify
                                          and not changed["cml_tls_verify"])
    cleared = redirected and not changed.get("cml_password") and bool(locked.cml_password_encrypted)
    if cleared:
        changed["cml_password"] = ""
    columns = []
    for key, value in changed.items():
        if key == "cml_password":
            locked.cml_password_encrypted = encrypt(value) if value else ""
            columns.append("cml_password_encrypted")
        else:
            setattr(locked, key, value)
            columns.append(key)
    locked.save(update_fields=[*columns, "updated_at"])
    _audit(locked, event_type="worker.updated", actor=actor, action="worker.update_connection",
           metadata={"changed": sorted(changed), "name": locked.name, "cml_url": locked.cml_url,
                     "cml_tls_verify": locked.cml_tls_verify, "console_host": locked.console_host,
                     **({"cml_password_cleared": True} if cleared else {})})
    return locked
