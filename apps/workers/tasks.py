"""django-q2 entry points (scheduled by `setup_schedules`): take ids, call services."""

import logging

from apps.workers.services import worker_cml_health_all, worker_ec2_sync

log = logging.getLogger(__name__)


def ec2_sync() -> dict:
    summary = worker_ec2_sync()
    log.info("ec2_sync: %s", summary)
    return summary


def cml_health() -> dict:
    summary = worker_cml_health_all()
    log.info("cml_health: %s", summary)
    return summary
