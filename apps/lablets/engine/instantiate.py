"""Bringing a lab up: SCHEDULED → INSTANTIATING → RUNNING.

`begin` (a SCHEDULED instance whose slot starts within LIFECYCLE_LEAD_MINUTES, on a running worker
with CML available) commits SCHEDULED → INSTANTIATING together with its claim, then `advance` does
the CML work: console ports, import (each port definition's device tagged `serial:<port>` etc. for CML
PATty, apps.lablets.patty; title = the instance's public id, the lab id recorded at once in its own
committed write), start without waiting, and a look at the nodes. All booted → RUNNING with
the console details; otherwise the claim is released with 'nodes booting n/m' and the next tick looks
again. Each step reached (importing, starting, booting n/m) is stored in `lifecycle_step` and journalled
as `lablet_instance.progressed` once per change, so the pages show it live. A resumed step (a retry, or
after a process died) first looks for a lab titled with the public id and adopts it instead of importing
a second one. The definition's topology is checked against the topology policy before the import
(apps.workers.cml.topology_policy); a refusal ends the instance at once (terminated, `failed: ...`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance
from apps.lablets.patty import topology_with_console_tags
from apps.lablets.services.console_access import console_access_open
from apps.lablets.services.instances import lablet_instance_transition
from apps.lablets.services.ports import console_ports_allocate
from apps.lablets.services.steps import (
    lablet_instance_forget_lab, lablet_instance_record_console, lablet_instance_record_lab,
    lablet_instance_record_lab_started)
from apps.workers import cml
from apps.workers.cml.topology_policy import TopologyRefused, topology_check
from apps.workers.models import WorkerStatus
from apps.core.errors import Conflict, InvalidTransition

from apps.lablets.services.lease import Claim, lease_fail, lease_take, lease_waiting

from .common import StepFailed, credentials, load, log
from .ending import give_up

BOOTED = "BOOTED"
NOT_STARTED = frozenset({"DEFINED_ON_CORE", "STOPPED"})


def worker_ready(instance: LabletInstance) -> str:
    """'' when the instance's worker can take the lab now, else why we wait."""
    worker = instance.worker
    if worker is None:
        return "waiting for a worker"
    if worker.status != WorkerStatus.RUNNING:
        return f"waiting for worker {worker.public_id} ({worker.status})"
    if worker.cml_service_status != "available":
        return f"waiting for CML on worker {worker.public_id} ({worker.cml_service_status})"
    return ""


def is_due(instance: LabletInstance, now: datetime) -> bool:
    return instance.timeslot_start - timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES) <= now


def begin(pk: int, *, now: datetime, actor: str) -> str:
    """Start instantiating a due SCHEDULED instance. Returns what happened ('waiting', 'running', ...)."""
    instance = load(pk)
    if instance.status != S.SCHEDULED or not is_due(instance, now):
        return "not_due"
    waiting = worker_ready(instance)
    if waiting:
        lease_waiting(pk, text=waiting)
        return "waiting"
    try:
        with transaction.atomic():
            instance = lablet_instance_transition(
                instance=instance, to=S.INSTANTIATING, actor=actor,
                reason=f"the timeslot starts at {instance.timeslot_start.isoformat()}: bringing the lab up")
            until = lease_take(pk, now=now, step="allocating console ports")
    except InvalidTransition as exc:  # another process got there first
        log.info("lifecycle: stale instantiation of %s: %s", instance.public_id, exc)
        return "stale"
    step = Claim(instance=load(pk), until=until, now=now, actor=actor, fresh=True)
    return advance(step)


def _record_lab(step: Claim, lab_id: str, *, adopted: bool) -> str:
    """Record the lab id, committed at once; returns the lab id the instance ends up with."""
    step.instance = lablet_instance_record_lab(instance_pk=step.pk, lab_id=lab_id, actor=step.actor, adopted=adopted)
    return step.instance.cml_lab_id


def _ensure_lab(step: Claim, creds: dict, ports: list[dict]) -> str:
    instance = step.instance
    if instance.cml_lab_id:
        return instance.cml_lab_id
    if not step.fresh:  # a step before this one may have imported it and died before recording it
        found = cml.cml_lab_ids_by_title(**creds, title=instance.public_id)
        if found:
            lab_id = _record_lab(step, found[0], adopted=True)
            for extra in found[1:]:  # duplicates from overlapping attempts
                cml.cml_lab_delete(**creds, lab_id=extra, force=True, missing_ok=True)
            return lab_id
    definition = instance.definition  # checked again before CML sees it (defence in depth): never retried
    topology_check(definition.cml_lab_yaml, trusted=definition.trusted, field="cml_lab_yaml")
    step.record_progress("importing")
    # Each port definition's device tagged for PATty with its allocated port (the stored definition unchanged).
    topology = topology_with_console_tags(definition.cml_lab_yaml, port_definitions=definition.port_definitions,
                                          ports=ports)
    lab_id = cml.cml_lab_import(**creds, topology_yaml=topology, title=instance.public_id)
    recorded = _record_lab(step, lab_id, adopted=False)
    if recorded != lab_id:  # someone else's attempt recorded another lab meanwhile: ours is surplus
        cml.cml_lab_delete(**creds, lab_id=lab_id, force=True, missing_ok=True)
    return recorded


def console_host(worker) -> str | None:
    """Where students reach the worker's PATty ports: its own console host, else settings.CONSOLE_HOST, else its
    public (then private) address."""
    if worker is None:
        return None
    return worker.console_host or settings.CONSOLE_HOST or worker.ip_address or worker.private_ip_address


def console_details(instance: LabletInstance, ports: list[dict], nodes: list[cml.CmlNode]) -> list[dict]:
    """Console access per port definition: where to connect (console host, allocated port) and how."""
    by_label = {node.label: node for node in nodes}
    port_of = {}
    for held in ports:
        port_of.setdefault(held["name"], []).append(held["port"])
    host = console_host(instance.worker)
    console = []
    for spec in instance.definition.port_definitions or []:
        node = by_label.get(spec.get("device_name"))
        allocated = port_of.get(spec.get("name")) or [None]
        console.append({
            "name": spec.get("name"),
            "device_name": spec.get("device_name"),
            "console_type": spec.get("console_type"),
            "host": host,
            "port": allocated.pop(0),
            "device_port": spec.get("port"),
            "node_id": node.id if node else None,
            "console_key": node.console_key if node else None,
            "console_path": node.console_path if node else None,
        })
    return console


def _finish(step: Claim, ports: list[dict], nodes: list[cml.CmlNode]) -> str:
    instance = step.instance
    try:
        with transaction.atomic():
            lablet_instance_transition(instance=instance, to=S.RUNNING, actor=step.actor,
                                       reason=f"all {len(nodes)} node(s) of lab {instance.cml_lab_id} booted")
            lablet_instance_record_console(instance_pk=step.pk, claimed_until=step.until,
                                           console=console_details(instance, ports, nodes))
            step.release(lifecycle_step="")
    except InvalidTransition as exc:  # ended meanwhile (terminate, expiry): the teardown takes over
        log.info("lifecycle: %s did not become running: %s", instance.public_id, exc)
        step.drop()
        return "stale"
    console_access_open(instance_pk=step.pk, actor=step.actor)  # after the commit: EC2 is network I/O
    return "running"


def advance(step: Claim) -> str:
    """One pass over a claimed INSTANTIATING instance; gives the claim back (an unexpected error leaves it
    to run out)."""
    try:
        creds = credentials(step.instance)
        ports = console_ports_allocate(instance=step.instance)
        lab_id = _ensure_lab(step, creds, ports)
        try:
            nodes = cml.cml_lab_nodes(**creds, lab_id=lab_id)
            if any(node.state in NOT_STARTED for node in nodes):
                step.record_progress("starting")
                cml.cml_lab_start(**creds, lab_id=lab_id, wait=False)
                audit_started = True
                nodes = cml.cml_lab_nodes(**creds, lab_id=lab_id)
            else:
                audit_started = False
        except cml.CmlError as exc:
            if exc.kind == cml.CmlError.NOT_FOUND:  # the lab vanished: import a new one on the retry
                lablet_instance_forget_lab(instance_pk=step.pk, lab_id=lab_id)
            raise
        if audit_started:
            lablet_instance_record_lab_started(instance=step.refresh(), actor=step.actor, nodes=len(nodes))
        booted = sum(1 for node in nodes if node.state == BOOTED)
        if booted == len(nodes):
            return _finish(step, ports, nodes)
        step.record_progress("booting", nodes_booted=booted, nodes_total=len(nodes))
        step.release()
        return "booting"
    except TopologyRefused as exc:  # the definition's topology breaks the policy: no retry makes it pass
        from .teardown import cleanup

        give_up(step.pk, actor=step.actor, now=step.now, error=f"instantiation: {exc.detail}")
        cleanup(step.pk, now=step.now, actor=step.actor)
        return "failed"
    except (cml.CmlError, StepFailed, Conflict) as exc:
        detail = exc.detail if isinstance(exc, Conflict) else str(exc)
        if lease_fail(step, step="instantiate", error=detail):
            from .teardown import cleanup

            give_up(step.pk, actor=step.actor, now=step.now, error=f"instantiation: {detail}")
            cleanup(step.pk, now=step.now, actor=step.actor)
            return "failed"
        return "retry"
