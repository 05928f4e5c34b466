"""What every engine step shares: errors, loading, CML credentials. The lease and the retries (claim,
release, fail) are apps/lablets/services/lease.py, the only writer of their fields; a step's results and
its journal rows are apps/lablets/services/steps.py.
"""

from __future__ import annotations

import logging

from django.conf import settings

from apps.lablets.models import LabletInstance
from apps.lablets.services.scheduling import lablet_instances_schedule_pending
from apps.workers.services.cml import cml_credentials

log = logging.getLogger("apps.lablets.engine")


def cml_timeout() -> float:
    """Seconds per CML request in lifecycle steps (imports and exports are slower than health checks)."""
    return settings.LIFECYCLE_CML_TIMEOUT_SECONDS


class StepFailed(Exception):
    """A step could not finish; it is retried with backoff (apps.lablets.services.lease.lease_fail)."""


def load(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker").get(pk=pk)


def credentials(instance: LabletInstance) -> dict:
    """The CML credentials of the instance's worker, with the lifecycle timeout; StepFailed if none."""
    if instance.worker is None:
        raise StepFailed("the instance has no worker")
    creds = cml_credentials(instance.worker)
    if creds is None:
        raise StepFailed(f"worker {instance.worker.public_id} has no address yet")
    return {**creds, "timeout": cml_timeout()}


def schedule_pending(actor: str) -> None:
    """Capacity was freed: place waiting reservations now rather than at the next scheduler pass."""
    try:
        lablet_instances_schedule_pending(actor=actor)
    except Exception:  # noqa: BLE001 - placement trouble must not undo a finished teardown
        log.exception("lifecycle: placing pending instances after freeing capacity failed")
