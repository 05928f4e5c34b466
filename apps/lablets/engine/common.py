"""What every engine step shares: the lease (claim/release), retries with backoff, the journal.

A step is: claim the instance (a compare-and-swap on `claimed_until`, so two q clusters never work on
the same instance at once), do the network calls with no transaction open, then commit the outcome
(a transition, or progress) and release the claim in one short transaction. A process killed in the
middle leaves a claim that runs out after LIFECYCLE_STEP_LEASE_SECONDS; the next tick takes over and
reconciles with what CML reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.lablets.models import LabletInstance
from apps.lablets.services.journal import instance_audit
from apps.lablets.services.scheduling import lablet_instances_schedule_pending
from apps.workers.services.cml import cml_credentials

log = logging.getLogger("apps.lablets.engine")

CLEANUP_MAX_DELAY = timedelta(hours=1)  # the cleanup of a lab left behind retries forever, at most hourly


def lease_seconds() -> float:
    return settings.LIFECYCLE_STEP_LEASE_SECONDS


def cml_timeout() -> float:
    """Seconds per CML request in lifecycle steps (imports and exports are slower than health checks)."""
    return settings.LIFECYCLE_CML_TIMEOUT_SECONDS


class StepFailed(Exception):
    """A step could not finish; it is retried with backoff (see `fail`)."""


def load(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker").get(pk=pk)


def claimable(now: datetime) -> Q:
    """Rows no process holds and whose retry time (if any) has come."""
    return ((Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)))


@dataclass
class Claim:
    instance: LabletInstance
    until: datetime  # the lease; also the token: only its holder may release it
    now: datetime
    actor: str
    fresh: bool = False  # this process just started the step (nothing can have been done before it)

    @property
    def pk(self) -> int:
        return self.instance.pk

    def mine(self):
        return LabletInstance.objects.filter(pk=self.pk, claimed_until=self.until)

    def progress(self, text: str, **fields) -> None:
        """Show how far the step got (e.g. 'nodes booting 3/5'), and record other fields, while held."""
        self.mine().update(lifecycle_step=text[:200], updated_at=timezone.now(), **fields)

    def record_progress(self, step: str, **counts) -> bool:
        """An instantiation step reached ('importing', 'starting', 'booting' with nodes_booted/nodes_total):
        stored and journalled as `lablet_instance.progressed` once per change, while held."""
        from apps.lablets.services.instances import lablet_instance_record_progress

        return lablet_instance_record_progress(instance=self.instance, step=step, actor=self.actor,
                                               claimed_until=self.until, **counts)

    def release(self, **fields) -> int:
        """Give the claim back after a step that went well: the retry bookkeeping starts over."""
        return self.mine().update(claimed_until=None, attempts=0, next_attempt_at=None, last_error="",
                                  updated_at=timezone.now(), **fields)

    def refresh(self) -> LabletInstance:
        self.instance = load(self.pk)
        return self.instance


def claim(pk: int, *, status: str, now: datetime, actor: str, force_due: bool = False) -> Claim | None:
    """Take the instance for one step if it is in `status`, nobody holds it and (unless `force_due`)
    its retry time has come. A lost race returns None."""
    until = timezone.now() + timedelta(seconds=lease_seconds())
    until = max(until, now + timedelta(seconds=lease_seconds()))
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    rows = LabletInstance.objects.filter(free, pk=pk, status=status)
    if not force_due:
        rows = rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    if rows.update(claimed_until=until) != 1:
        return None
    return Claim(instance=load(pk), until=until, now=now, actor=actor)


def audit(instance: LabletInstance, *, event: str, actor: str, success: bool = True, error: str = "",
          metadata: dict | None = None) -> None:
    """One journal row about an instance (`lablet_instance.<event>`, with its CML lab), in the caller's
    transaction."""
    instance_audit(instance, event_type=f"lablet_instance.{event}", actor=actor, action=f"lablet_instance.{event}",
                   success=success, error=error[:500], metadata=metadata, with_lab=True)


def credentials(instance: LabletInstance) -> dict:
    """The CML credentials of the instance's worker, with the lifecycle timeout; StepFailed if none."""
    if instance.worker is None:
        raise StepFailed("the instance has no worker")
    creds = cml_credentials(instance.worker)
    if creds is None:
        raise StepFailed(f"worker {instance.worker.public_id} has no address yet")
    return {**creds, "timeout": cml_timeout()}


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=settings.LIFECYCLE_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))


def fail(claim_: Claim, *, step: str, error: str, bounded: bool = True) -> bool:
    """Record a failed attempt of `step` and release the claim. Returns True when the attempts are used
    up (`bounded` steps only: the caller then ends the instance); otherwise it is retried after the
    backoff (LIFECYCLE_RETRY_BASE_SECONDS, doubling per attempt; at most hourly when unbounded)."""
    with transaction.atomic():
        locked = LabletInstance.objects.select_for_update(of=("self",)).select_related(
            "definition", "worker").get(pk=claim_.pk)
        if locked.claimed_until != claim_.until:
            log.info("lifecycle: %s lost its claim during %s; another process took over", locked.public_id, step)
            return False
        attempts = min(locked.attempts + 1, 32000)
        gave_up = bounded and attempts >= settings.LIFECYCLE_MAX_ATTEMPTS
        delay = backoff(attempts) if bounded else min(backoff(attempts), CLEANUP_MAX_DELAY)
        retry_at = None if gave_up else claim_.now + delay
        limit = f"/{settings.LIFECYCLE_MAX_ATTEMPTS}" if bounded else ""
        text = (f"{step} failed (attempt {attempts}{limit})"
                + ("" if gave_up else f"; retrying at {retry_at.isoformat(timespec='seconds')}"))
        LabletInstance.objects.filter(pk=locked.pk).update(
            attempts=attempts, next_attempt_at=retry_at, claimed_until=None, last_error=error[:500],
            lifecycle_step=text[:200], updated_at=timezone.now())
        audit(locked, event="step_failed", actor=claim_.actor, success=False, error=error, metadata={
            "step": step, "text": text[:200], "attempt": attempts,
            "max_attempts": settings.LIFECYCLE_MAX_ATTEMPTS if bounded else None,
            "retry_at": retry_at.isoformat() if retry_at else None, "gave_up": gave_up,
        })
    log.warning("lifecycle: %s: %s failed (attempt %s%s): %s", locked.public_id, step, attempts, limit, error)
    return gave_up


def schedule_pending(actor: str) -> None:
    """Capacity was freed: place waiting reservations now rather than at the next scheduler pass."""
    try:
        lablet_instances_schedule_pending(actor=actor)
    except Exception:  # noqa: BLE001 - placement trouble must not undo a finished teardown
        log.exception("lifecycle: placing pending instances after freeing capacity failed")
