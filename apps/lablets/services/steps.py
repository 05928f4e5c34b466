"""The results of the lifecycle engine's steps (apps/lablets/engine/): the only writers of an instance's
`cml_lab_id`, `console`, `archive_key`, `artifacts` (and the `last_activity_at` of a collection),
`cml_lab_removed_at`, `termination_reason` and `expiring_notified_at`, and of the journal rows of those
steps (`lablet_instance.<event>`, with the instance's CML lab). tests/test_status_writes.py scans for them.

One function per kind of result, named for what it records. The engine decides when and in which
transaction: a function said to run in the caller's transaction writes there (e.g. with the transition it
belongs to, on the row the caller holds locked); the others commit on their own.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.lablets.models import LabletInstance
from apps.lablets.services.journal import instance_audit


def _load(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker").get(pk=pk)


def _journal(instance: LabletInstance, *, event: str, actor: str, success: bool = True, error: str = "",
             metadata: dict | None = None) -> None:
    """One journal row of an engine step (`lablet_instance.<event>`, with its CML lab), in the caller's
    transaction."""
    instance_audit(instance, event_type=f"lablet_instance.{event}", actor=actor, action=f"lablet_instance.{event}",
                   success=success, error=error[:500], metadata=metadata)


# --- the CML lab ------------------------------------------------------------------------------------

@transaction.atomic
def lablet_instance_record_lab(*, instance_pk: int, lab_id: str, actor: str, adopted: bool) -> LabletInstance:
    """The instance's CML lab, imported (or, `adopted`, found on CML by its title): recorded unless one is
    recorded already (the first wins), with `lablet_instance.lab_imported` / `lab_adopted`, committed at
    once. Returns the instance as it now is (its `cml_lab_id` is the lab it ends up with)."""
    written = LabletInstance.objects.filter(pk=instance_pk, cml_lab_id="").update(
        cml_lab_id=lab_id, updated_at=timezone.now())
    instance = _load(instance_pk)
    if written:
        _journal(instance, event="lab_adopted" if adopted else "lab_imported", actor=actor,
                 metadata={"title": instance.public_id})
    return instance


def lablet_instance_forget_lab(*, instance_pk: int, lab_id: str) -> None:
    """The recorded lab `lab_id` is gone from CML (it vanished mid-instantiation): forgotten, so that the
    retry imports a new one. Not journalled."""
    LabletInstance.objects.filter(pk=instance_pk, cml_lab_id=lab_id).update(cml_lab_id="")


@transaction.atomic
def lablet_instance_record_lab_started(*, instance: LabletInstance, actor: str, nodes: int) -> None:
    """The lab was started on CML: `lablet_instance.lab_started` with its node count (journal only)."""
    _journal(instance, event="lab_started", actor=actor, metadata={"nodes": nodes})


def lablet_instance_record_labs_deleted(*, instance: LabletInstance, actor: str, lab_ids: list[str],
                                        cleanup: str | None = None) -> None:
    """The instance's labs were deleted from CML: `lablet_instance.lab_deleted` (journal only; with
    `cleanup`, why the cleanup sweep removed them), in the caller's transaction."""
    metadata = {"lab_ids": lab_ids} if cleanup is None else {"lab_ids": lab_ids, "cleanup": cleanup}
    _journal(instance, event="lab_deleted", actor=actor, metadata=metadata)


def lablet_instance_record_lab_removed(*, instance_pk: int, at: datetime) -> None:
    """No lab of the instance is left on CML (deleted, or gone with its worker): `cml_lab_removed_at`, in
    the caller's transaction (the transition to TERMINATED, or the end of the engine's work on it)."""
    LabletInstance.objects.filter(pk=instance_pk).update(cml_lab_removed_at=at)


# --- what the lab held ------------------------------------------------------------------------------

def lablet_instance_record_console(*, instance_pk: int, claimed_until: datetime, console: list[dict]) -> int:
    """The console access of a running lab (one entry per port definition; [] once it is stopped), while
    the engine's claim `claimed_until` holds the row, in the caller's transaction (the transition to
    RUNNING or STOPPED). Returns the rows written (0: the claim was lost)."""
    return LabletInstance.objects.filter(pk=instance_pk, claimed_until=claimed_until).update(
        console=console, updated_at=timezone.now())


def lablet_instance_record_collection(*, instance: LabletInstance, actor: str, artifacts: list[dict],
                                      at: datetime) -> None:
    """The node configurations collected (`artifacts`), which count as activity (`last_activity_at`), and
    `lablet_instance.collected`, in the caller's transaction (the transition to COLLECTING)."""
    LabletInstance.objects.filter(pk=instance.pk).update(artifacts=artifacts, last_activity_at=at)
    _journal(instance, event="collected", actor=actor,
             metadata={"artifacts": len(artifacts), "nodes": [a["node"] for a in artifacts]})


@transaction.atomic
def lablet_instance_record_collection_failed(*, instance: LabletInstance, actor: str, error: str) -> None:
    """Collecting the node configurations failed (the instance stays RUNNING):
    `lablet_instance.collection_failed` (journal only)."""
    _journal(instance, event="collection_failed", actor=actor, success=False, error=error)


def lablet_instance_record_archive(*, instance_pk: int, archive_key: str) -> None:
    """Where the lab, its artifacts and a summary were archived (the S3 key prefix), in the caller's
    transaction (the transition to ARCHIVED)."""
    LabletInstance.objects.filter(pk=instance_pk).update(archive_key=archive_key)


# --- the end ----------------------------------------------------------------------------------------

def lablet_instance_record_termination_reason(*, instance_pk: int, reason: str) -> None:
    """Why the instance ends ('terminate requested', 'timeslot ended', 'idle', 'expired',
    'failed: <step>: <error>'): the first reason wins, a later one writes nothing. In the caller's
    transaction, on the row it holds locked."""
    LabletInstance.objects.filter(pk=instance_pk, termination_reason="").update(termination_reason=reason[:200])


@transaction.atomic
def lablet_instance_record_expiring(*, instance: LabletInstance, actor: str, now: datetime) -> bool:
    """The slot ends soon: `expiring_notified_at` and `lablet_instance.expiring` with the minutes left, once
    per slot end (an extension clears it; lablet_instance_extend). Returns whether it was sent now."""
    if not LabletInstance.objects.filter(pk=instance.pk, expiring_notified_at__isnull=True).update(
            expiring_notified_at=now):
        return False
    minutes_left = max(0, int((instance.timeslot_end - now).total_seconds() // 60))
    _journal(instance, event="expiring", actor=actor, metadata={
        "timeslot_end": instance.timeslot_end.isoformat(), "minutes_left": minutes_left})
    return True
