"""The lifecycle engine's lease on an instance, and its retry bookkeeping: the only writer of
`claimed_until`, `attempts`, `next_attempt_at` and `lifecycle_step` (tests/test_status_writes.py scans
for them), as lablet_instance_transition is of `status`.

A step of the engine (apps/lablets/engine/) is: claim the instance (a compare-and-swap on `claimed_until`,
so two q clusters never work on the same instance at once), do the network calls with no transaction
open, then commit the outcome (a transition, or progress) and release the claim in one short
transaction. A process killed in the middle leaves a claim that runs out after
LIFECYCLE_STEP_LEASE_SECONDS; the next tick takes over and reconciles with what CML reports. A failed
step records the attempt and the time of the next one (`lease_fail`); a success starts the count over
(`Claim.release`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.services.journal import instance_audit

log = logging.getLogger("apps.lablets.engine")

CLEANUP_MAX_DELAY = timedelta(hours=1)  # the cleanup of a lab left behind retries forever, at most hourly


def lease_seconds() -> float:
    return settings.LIFECYCLE_STEP_LEASE_SECONDS


def _load(pk: int) -> LabletInstance:
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
        """The instance's row while this claim holds it."""
        return LabletInstance.objects.filter(pk=self.pk, claimed_until=self.until)

    def progress(self, text: str) -> None:
        """Show how far the step got (e.g. 'exporting lab'), while held."""
        self.mine().update(lifecycle_step=text[:200], updated_at=timezone.now())

    def record_progress(self, step: str, **counts) -> bool:
        """An instantiation step reached ('importing', 'starting', 'booting' with nodes_booted/nodes_total):
        stored and journalled as `lablet_instance.progressed` once per change, while held."""
        from apps.lablets.services.instances import lablet_instance_record_progress

        return lablet_instance_record_progress(instance=self.instance, step=step, actor=self.actor,
                                               claimed_until=self.until, **counts)

    def release(self, *, lifecycle_step: str | None = None) -> int:
        """Give the claim back after a step that went well: the retry bookkeeping starts over; with
        `lifecycle_step`, the step shown next ('' for none). The step's results are written before, through
        services/steps.py, while the claim still holds the row."""
        step = {} if lifecycle_step is None else {"lifecycle_step": lifecycle_step}
        return self.mine().update(claimed_until=None, attempts=0, next_attempt_at=None, last_error="",
                                  updated_at=timezone.now(), **step)

    def drop(self) -> int:
        """Give the claim back after a stale decision (the instance moved on meanwhile), touching nothing else."""
        return self.mine().update(claimed_until=None)

    def refresh(self) -> LabletInstance:
        self.instance = _load(self.pk)
        return self.instance


def lease_claim(pk: int, *, status: str, now: datetime, actor: str, force_due: bool = False) -> Claim | None:
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
    return Claim(instance=_load(pk), until=until, now=now, actor=actor)


def lease_take(pk: int, *, now: datetime, step: str) -> datetime:
    """Claim an instance whose row the caller holds locked (it has just moved it to a new state, in the same
    transaction): a fresh start, retries counted anew. Returns the lease (build the Claim after the commit)."""
    until = max(timezone.now(), now) + timedelta(seconds=lease_seconds())
    LabletInstance.objects.filter(pk=pk).update(claimed_until=until, attempts=0, next_attempt_at=None,
                                                last_error="", lifecycle_step=step[:200])
    return until


def lease_restart(pk: int, *, step: str) -> None:
    """A new phase for an instance (the teardown begins): retries counted anew, the claim a process may
    still hold left to run out (its stale decision gives it back)."""
    LabletInstance.objects.filter(pk=pk).update(attempts=0, next_attempt_at=None, last_error="",
                                                lifecycle_step=step[:200])


def lease_clear(pk: int) -> None:
    """The engine is done with the instance (it ends, or its labs are gone): no claim, nothing to retry,
    no step shown."""
    LabletInstance.objects.filter(pk=pk).update(claimed_until=None, next_attempt_at=None, attempts=0,
                                                lifecycle_step="", updated_at=timezone.now())


def lease_waiting(pk: int, *, text: str) -> None:
    """What a SCHEDULED instance due to come up waits for (e.g. its worker), shown until it starts."""
    (LabletInstance.objects.filter(pk=pk, status=InstanceStatus.SCHEDULED).exclude(lifecycle_step=text)
     .update(lifecycle_step=text[:200]))


def lease_progress(pk: int, *, text: str, claimed_until: datetime | None = None) -> bool:
    """An INSTANTIATING instance's step text, if it changed (and, with `claimed_until`, only while that
    claim holds it). Returns whether it was written."""
    rows = LabletInstance.objects.filter(pk=pk, status=InstanceStatus.INSTANTIATING).exclude(lifecycle_step=text)
    if claimed_until is not None:
        rows = rows.filter(claimed_until=claimed_until)
    return bool(rows.update(lifecycle_step=text[:200], updated_at=timezone.now()))


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=settings.LIFECYCLE_RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1))


def lease_fail(claim: Claim, *, step: str, error: str, bounded: bool = True) -> bool:
    """Record a failed attempt of `step` and release the claim. Returns True when the attempts are used
    up (`bounded` steps only: the caller then ends the instance); otherwise it is retried after the
    backoff (LIFECYCLE_RETRY_BASE_SECONDS, doubling per attempt; at most hourly when unbounded)."""
    with transaction.atomic():
        locked = LabletInstance.objects.select_for_update(of=("self",)).select_related(
            "definition", "worker").get(pk=claim.pk)
        if locked.claimed_until != claim.until:
            log.info("lifecycle: %s lost its claim during %s; another process took over", locked.public_id, step)
            return False
        attempts = min(locked.attempts + 1, 32000)
        gave_up = bounded and attempts >= settings.LIFECYCLE_MAX_ATTEMPTS
        delay = backoff(attempts) if bounded else min(backoff(attempts), CLEANUP_MAX_DELAY)
        retry_at = None if gave_up else claim.now + delay
        limit = f"/{settings.LIFECYCLE_MAX_ATTEMPTS}" if bounded else ""
        text = (f"{step} failed (attempt {attempts}{limit})"
                + ("" if gave_up else f"; retrying at {retry_at.isoformat(timespec='seconds')}"))
        LabletInstance.objects.filter(pk=locked.pk).update(
            attempts=attempts, next_attempt_at=retry_at, claimed_until=None, last_error=error[:500],
            lifecycle_step=text[:200], updated_at=timezone.now())
        instance_audit(locked, event_type="lablet_instance.step_failed", actor=claim.actor,
                       action="lablet_instance.step_failed", success=False, error=error[:500],
                       metadata={"step": step, "text": text[:200], "attempt": attempts,
                                 "max_attempts": settings.LIFECYCLE_MAX_ATTEMPTS if bounded else None,
                                 "retry_at": retry_at.isoformat() if retry_at else None, "gave_up": gave_up})
    log.warning("lifecycle: %s: %s failed (attempt %s%s): %s", locked.public_id, step, attempts, limit, error)
    return gave_up
