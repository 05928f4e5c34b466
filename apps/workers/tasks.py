"""django-q2 entry points (scheduled by `setup_schedules`): take ids, call services."""

import logging

from apps.workers.services import worker_cml_health_all, worker_ec2_sync
from apps.workers.services.cml import worker_cml_health_for_task

log = logging.getLogger(__name__)


def ec2_sync(actor: str = "system") -> dict:
    """Scheduled, or requested by the admin's "Sync now" (worker_ec2_sync_begin) on behalf of `actor`."""
    summary = worker_ec2_sync(actor=actor)
    log.info("ec2_sync: %s", summary)
    return summary


def cml_health() -> dict:
    summary = worker_cml_health_all()
    log.info("cml_health: %s", summary)
    return summary


def cml_health_one(worker_pk: int, actor: str) -> dict:
    """One worker's check a POST /api/workers/{id}/sync started: {} or the refusal its request answers with."""
    return worker_cml_health_for_task(worker_pk=worker_pk, actor=actor)
