"""CML on each worker: health, licence and load (job `cml_health`), licence registration."""

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.workers import cml
from apps.workers.models import Worker, WorkerStatus
from labmanager.errors import Conflict, UpstreamUnavailable, ValidationFailed

log = logging.getLogger(__name__)


def cml_credentials(worker: Worker) -> dict | None:
    """url/username/password of the worker's CML controller, or None when it has no address yet."""
    url = settings.CML_URL_OVERRIDE or worker.cml_url
    if not url:
        address = worker.ip_address or worker.private_ip_address
        if not address:
            return None
        url = settings.CML_URL_TEMPLATE.format(ip_address=address)
    return {
        "url": url,
        "username": worker.cml_username or settings.CML_USERNAME,
        "password": worker.cml_password or settings.CML_PASSWORD,
    }


def _probe(worker: Worker) -> cml.CmlSystemStatus:
    credentials = cml_credentials(worker)
    if credentials is None:
        return cml.CmlSystemStatus(reachable=False, cml_service_status="unknown", error="worker has no address yet")
    try:
        return cml.cml_system_status(**credentials, timeout=settings.CML_TIMEOUT_SECONDS)
    except cml.CmlError as exc:  # bad credentials or an unsupported version: CML is not usable
        return cml.CmlSystemStatus(reachable=True, cml_service_status="unavailable", error=str(exc),
                                   license_status="unknown")


@transaction.atomic
def _record(worker: Worker, status: cml.CmlSystemStatus, *, actor: str) -> Worker:
    locked = Worker.objects.select_for_update().get(pk=worker.pk)
    before = (locked.cml_service_status, locked.license_status)
    locked.cml_service_status = status.cml_service_status
    locked.cml_error = status.error[:300]
    locked.last_cml_sync_at = timezone.now()
    if status.reachable and status.cml_service_status == "available":
        locked.cml_version = status.version or ""
        locked.license_status = status.license_status
        locked.license_tier = status.license_tier or ""
        locked.cpu_usage_percent = status.cpu_percent
        locked.memory_used_gb = status.memory_used_gb
        locked.memory_total_gb = status.memory_total_gb
        locked.memory_usage_percent = status.memory_percent
        locked.nodes_running = status.nodes_running or 0
        locked.cml_health = {"valid": status.health_valid, "issues": list(status.health_issues),
                             "ready": status.ready, "elapsed_s": status.elapsed_s}
    locked.save()
    after = (locked.cml_service_status, locked.license_status)
    if after != before:  # the journal gets changes, not every minute's reading
        audit_record(event_type="worker.cml_status_changed", actor=actor, resource_type="worker",
                     resource_id=locked.public_id, action="worker.cml_health",
                     success=locked.cml_service_status == "available", error=locked.cml_error,
                     metadata={"before": {"cml_service_status": before[0], "license_status": before[1]},
                               "after": {"cml_service_status": after[0], "license_status": after[1]}})
    return locked


def worker_cml_health(*, worker: Worker, actor: str = "system") -> Worker:
    return _record(worker, _probe(worker), actor=actor)


def worker_cml_health_all(*, actor: str = "system") -> dict:
    """Check every running worker's CML concurrently (network in threads, database writes here)."""
    workers = list(Worker.objects.filter(status=WorkerStatus.RUNNING))
    if not workers:
        return {"checked": 0, "available": 0}
    with ThreadPoolExecutor(max_workers=max(1, min(settings.CML_HEALTH_CONCURRENCY, len(workers)))) as pool:
        results = list(pool.map(_probe, workers))
    available = 0
    for worker, status in zip(workers, results):
        try:
            available += _record(worker, status, actor=actor).cml_service_status == "available"
        except Exception:  # one bad row must not stop the others
            log.exception("cml_health: could not record worker %s", worker.public_id)
    return {"checked": len(workers), "available": available}


def _licence_call(worker: Worker, call, *, actor: str, action: str, **kwargs) -> Worker:
    if worker.status != WorkerStatus.RUNNING:
        raise Conflict(f"Worker {worker.public_id} is {worker.status}; its CML can only be licensed while running.")
    credentials = cml_credentials(worker)
    if credentials is None:
        raise Conflict(f"Worker {worker.public_id} has no address yet.")
    try:
        call(**credentials, timeout=settings.CML_TIMEOUT_SECONDS, **kwargs)
    except cml.CmlError as exc:
        audit_record(event_type="worker.license_failed", actor=actor, resource_type="worker",
                     resource_id=worker.public_id, action=action, success=False, error=str(exc))
        if exc.kind == cml.CmlError.REFUSED:
            raise ValidationFailed(str(exc), errors={"token": [str(exc)]} if "token" in kwargs else None)
        raise UpstreamUnavailable(str(exc))
    audit_record(event_type=f"worker.{action.split('.')[-1]}", actor=actor, resource_type="worker",
                 resource_id=worker.public_id, action=action)
    return worker_cml_health(worker=worker, actor=actor)


def worker_license_register(*, worker: Worker, actor: str, token: str, reregister: bool = False) -> Worker:
    return _licence_call(worker, cml.cml_license_register, actor=actor, action="worker.license_register",
                         token=token, reregister=reregister)


def worker_license_deregister(*, worker: Worker, actor: str) -> Worker:
    return _licence_call(worker, cml.cml_license_deregister, actor=actor, action="worker.license_deregister")
