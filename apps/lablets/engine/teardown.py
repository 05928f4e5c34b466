"""Taking a lab down: STOPPING → STOPPED → ARCHIVED → TERMINATED, and the cleanup of labs left behind.

- STOPPING: stop the lab on CML (waiting until it has stopped) → STOPPED; console ports released,
  capacity free (STOPPED is not a live state).
- STOPPED: export the lab YAML, write it with the artifacts and an instance summary to S3 → ARCHIVED
  (`archive_key`).
- ARCHIVED: wipe and delete the lab (and any other lab titled with the instance's public id) → TERMINATED,
  `cml_lab_removed_at` stamped.
A lab whose id was never recorded (the process died between import and record) is found by its title.

Cleanup: a TERMINATED instance that reached INSTANTIATING and whose lab is not known to be gone (it
gave up while CML was unreachable, or was terminated while its lab was being imported) is swept by
every tick: its labs are deleted as soon as its worker runs and CML answers (retried, at most hourly).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.lablets import s3_archive as archive
from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance
from apps.lablets.services.console_access import console_access_close
from apps.lablets.services.instances import lablet_instance_transition
from apps.lablets.services.ports import console_ports_release
from apps.lablets.services.steps import (
    lablet_instance_record_archive, lablet_instance_record_console, lablet_instance_record_lab,
    lablet_instance_record_lab_removed, lablet_instance_record_labs_deleted)
from apps.workers import cml
from apps.workers.models import WorkerStatus
from apps.core.errors import InvalidTransition

from apps.lablets.services.lease import Claim, lease_claim, lease_clear, lease_fail, lease_seconds

from .common import StepFailed, credentials, load, log
from .ending import give_up


def _creds(instance: LabletInstance) -> dict | None:
    """CML credentials, or None when the lab cannot exist any more (no worker, or it was terminated)."""
    if instance.worker is None or instance.worker.status == WorkerStatus.TERMINATED:
        return None
    return credentials(instance)


def _lab_id(step: Claim, creds: dict | None) -> str:
    """The instance's lab: the recorded id, else (when it reached instantiating) one titled with its id."""
    instance = step.instance
    if instance.cml_lab_id or creds is None or instance.instantiating_at is None or instance.cml_lab_removed_at:
        return instance.cml_lab_id
    found = cml.cml_lab_ids_by_title(**creds, title=instance.public_id)
    if not found:
        return ""
    step.instance = lablet_instance_record_lab(instance_pk=step.pk, lab_id=found[0], actor=step.actor, adopted=True)
    return step.instance.cml_lab_id


def _all_lab_ids(instance: LabletInstance, creds: dict) -> list[str]:
    ids = [instance.cml_lab_id] if instance.cml_lab_id else []
    if instance.instantiating_at is not None:
        ids += [i for i in cml.cml_lab_ids_by_title(**creds, title=instance.public_id) if i not in ids]
    return ids


def _wait() -> dict:
    return {"wait_timeout": max(5.0, lease_seconds() / 3), "poll_interval": 0.5}


def _transition(step: Claim, to: str, reason: str, *, next_step: str,
                record: Callable[[], object] | None = None) -> str:
    """The step's transition to `to`, with `record()` (the step's result, through services/steps.py) and the
    claim given back showing `next_step`, in one transaction; a stale decision gives the claim back."""
    try:
        with transaction.atomic():
            if record:
                record()
            instance = lablet_instance_transition(instance=step.instance, to=to, actor=step.actor, reason=reason)
            step.release(lifecycle_step=next_step)
            if to in (S.STOPPED, S.TERMINATED):
                console_ports_release(instance=instance)
    except InvalidTransition as exc:
        log.info("lifecycle: stale teardown of %s: %s", step.instance.public_id, exc)
        step.drop()
        return "stale"
    return to


def _stop(step: Claim) -> str:
    console_access_close(instance_pk=step.pk, actor=step.actor)  # students' direct access goes first (no retry
    creds = _creds(step.instance)                                 # here: the tick's reconcile tries again)
    lab_id = _lab_id(step, creds)
    reason = "no lab to stop"
    if lab_id and creds:
        step.progress("stopping lab")
        try:
            cml.cml_lab_stop(**creds, lab_id=lab_id, wait=True, **_wait())
            reason = f"lab {lab_id} stopped"
        except cml.CmlError as exc:
            if exc.kind != cml.CmlError.NOT_FOUND:
                raise
            reason = f"lab {lab_id} is gone from CML"
    return _transition(step, S.STOPPED, reason, next_step="archiving",
                       record=lambda: lablet_instance_record_console(instance_pk=step.pk, claimed_until=step.until,
                                                                     console=[]))


def _snapshot(instance: LabletInstance) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": instance.public_id,
        "definition": {"id": instance.definition.public_id, "name": instance.definition.name,
                       "version": instance.definition.version, "content_hash": instance.definition.content_hash},
        "owner_id": instance.owner_id,
        "reservation_id": instance.reservation_id,
        "worker_id": instance.worker.public_id if instance.worker else None,
        "cml_lab_id": instance.cml_lab_id or None,
        "timeslot_start": iso(instance.timeslot_start),
        "timeslot_end": iso(instance.timeslot_end),
        "running_at": iso(instance.running_at),
        "stopped_at": iso(instance.stopped_at),
        "termination_reason": instance.termination_reason,
        "grading_result": instance.grading_result,
        "archived_at": timezone.now().isoformat(),
    }


def _archive(step: Claim) -> str:
    instance = step.instance
    creds = _creds(instance)
    lab_id = _lab_id(step, creds)
    lab_yaml = None
    if lab_id and creds:
        step.progress("exporting lab")
        try:
            lab_yaml = cml.cml_lab_export_yaml(**creds, lab_id=lab_id)
        except cml.CmlError as exc:
            if exc.kind != cml.CmlError.NOT_FOUND:
                raise
    step.progress("archiving")
    instance = step.refresh()
    files = archive.archive_files(instance_snapshot=_snapshot(instance), lab_yaml=lab_yaml,
                                  artifacts=instance.artifacts or [])
    prefix = archive.archive_put(public_id=instance.public_id, files=files)
    return _transition(step, S.ARCHIVED, f"archived to s3://{settings.ARCHIVE_S3_BUCKET}/{prefix}",
                       next_step="deleting lab",
                       record=lambda: lablet_instance_record_archive(instance_pk=step.pk, archive_key=prefix))


def _delete_labs(step: Claim, creds: dict | None) -> list[str]:
    if creds is None:
        return []
    ids = _all_lab_ids(step.instance, creds)
    for lab_id in ids:
        step.progress(f"deleting lab {lab_id}")
        cml.cml_lab_delete(**creds, lab_id=lab_id, force=True, missing_ok=True, **_wait())
    return ids


def _remove(step: Claim) -> str:
    instance = step.instance
    ids = _delete_labs(step, _creds(instance))
    with transaction.atomic():
        if ids:
            lablet_instance_record_labs_deleted(instance=instance, actor=step.actor, lab_ids=ids)
        return _transition(step, S.TERMINATED, instance.termination_reason or "teardown finished", next_step="",
                           record=lambda: lablet_instance_record_lab_removed(instance_pk=step.pk, at=timezone.now()))


STEPS = {S.STOPPING: ("stop", _stop), S.STOPPED: ("archive", _archive), S.ARCHIVED: ("delete", _remove)}


def teardown_step(step: Claim) -> str:
    """One claimed teardown step. Returns the state reached, or 'retry' / 'failed' / 'stale'."""
    name, function = STEPS[step.instance.status]
    try:
        return function(step)
    except (cml.CmlError, archive.ArchiveError, StepFailed) as exc:
        if lease_fail(step, step=name, error=str(exc)):
            give_up(step.pk, actor=step.actor, now=step.now, error=f"{name}: {exc}")
            cleanup(step.pk, now=step.now, actor=step.actor)
            return "failed"
        return "retry"


def teardown(pk: int, *, now: datetime, actor: str, force_due: bool = False) -> list[str]:
    """Run the teardown steps one after the other while they succeed. Returns the outcomes."""
    outcomes = []
    for _ in range(len(STEPS)):
        status = LabletInstance.objects.filter(pk=pk).values_list("status", flat=True).first()
        if status not in TEARDOWN:
            break
        step = lease_claim(pk, status=status, now=now, actor=actor, force_due=force_due)
        if step is None:
            outcomes.append("busy")
            break
        outcome = teardown_step(step)
        outcomes.append(outcome)
        if outcome not in (S.STOPPED, S.ARCHIVED):
            break
    return outcomes


# --- the cleanup sweep ----------------------------------------------------------------------------

def needs_cleanup(instance: LabletInstance) -> bool:
    return (instance.status == S.TERMINATED and instance.instantiating_at is not None
            and instance.cml_lab_removed_at is None)


def _mark_removed(pk: int, *, actor: str, lab_ids: list[str], why: str) -> None:
    with transaction.atomic():
        lease_clear(pk)
        lablet_instance_record_lab_removed(instance_pk=pk, at=timezone.now())
        lablet_instance_record_labs_deleted(instance=load(pk), actor=actor, lab_ids=lab_ids, cleanup=why)


def cleanup(pk: int, *, now: datetime, actor: str) -> str:
    """Delete whatever lab a terminated instance left on CML (by recorded id and by title)."""
    instance = load(pk)
    if not needs_cleanup(instance):
        return "clean"
    worker = instance.worker
    if worker is None or worker.status == WorkerStatus.TERMINATED:
        _mark_removed(pk, actor=actor, lab_ids=[], why="the worker is gone, and its labs with it")
        return "removed"
    if worker.status != WorkerStatus.RUNNING:
        return "waiting"
    step = lease_claim(pk, status=S.TERMINATED, now=now, actor=actor)
    if step is None:
        return "busy"
    try:
        ids = _delete_labs(step, credentials(step.instance))
    except (cml.CmlError, StepFailed) as exc:
        lease_fail(step, step="cleanup", error=str(exc), bounded=False)
        return "retry"
    _mark_removed(pk, actor=actor, lab_ids=ids, why="labs left behind by a terminated instance")
    return "removed"
