"""CML on each worker: health, licence and load (job `cml_health`), licence registration.

`POST /api/workers/{id}/sync` checks one worker's CML in a q task (`worker_cml_health_begin`), whose outcome
the request awaits without a thread (`worker_cml_health_finish`; apps.core.awaited)."""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.workers import cml, ledger
from apps.workers.models import Worker, WorkerStatus
from apps.workers.selectors import percent
from apps.workers.services.templates import worker_template_record_boot
from apps.core.awaited import await_task, enqueue, reporting
from apps.core.encryption import DecryptionFailed, decrypt
from apps.core.errors import Conflict, UpstreamUnavailable, ValidationFailed

log = logging.getLogger(__name__)
HEALTH_TASK = "apps.workers.tasks.cml_health_one"


def _password(worker: Worker) -> str:
    """The worker's own CML password, decrypted; else settings.CML_PASSWORD, but only towards a URL the
    settings give (CML_URL_OVERRIDE, or CML_URL_TEMPLATE filled with the worker's address): a `cml_url` set on
    the worker by hand gets no password but its own, so the fleet's password never follows a URL someone
    typed. "" (the gateway refuses with kind `auth` before any request) when there is none, and for a stored
    password that cannot be decrypted (the key changed)."""
    if not worker.cml_password_encrypted:
        own_url = bool(worker.cml_url) and not settings.CML_URL_OVERRIDE
        return "" if own_url else settings.CML_PASSWORD
    try:
        return decrypt(worker.cml_password_encrypted)
    except DecryptionFailed:
        log.error("The stored CML password of worker %s cannot be decrypted (FIELD_ENCRYPTION_KEY or SECRET_KEY "
                  "changed?): set it again in the admin", worker.public_id)
        return ""


def cml_credentials(worker: Worker) -> dict | None:
    """url/username/password/tls_verify of the worker's CML controller (the keywords of every apps.workers.cml
    function), or None when it has no address yet."""
    url = settings.CML_URL_OVERRIDE or worker.cml_url
    if not url:
        address = worker.ip_address or worker.private_ip_address
        if not address:
            return None
        url = settings.CML_URL_TEMPLATE.format(ip_address=address)
    return {
        "url": url,
        "username": worker.cml_username or settings.CML_USERNAME,
        "password": _password(worker),
        "tls_verify": worker.cml_tls_verify,
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
def _record(worker: Worker, status: cml.CmlSystemStatus, *, actor: str, peak: tuple | None = None) -> Worker:
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
    booted = locked.boot_started_at is not None and locked.cml_service_status == "available"
    if booted:
        if locked.template_id is not None:
            worker_template_record_boot(template_id=locked.template_id, started_at=locked.boot_started_at,
                                        available_at=locked.last_cml_sync_at)
        locked.boot_started_at = None
    locked.save()
    _load_event(locked, actor=actor, peak=peak)
    after = (locked.cml_service_status, locked.license_status)
    if after != before:  # the journal gets changes, not every minute's reading
        audit_record(event_type="worker.cml_status_changed", actor=actor, resource_type="worker",
                     resource_id=locked.public_id, action="worker.cml_health",
                     success=locked.cml_service_status == "available", error=locked.cml_error,
                     metadata={"before": {"cml_service_status": before[0], "license_status": before[1]},
                               "after": {"cml_service_status": after[0], "license_status": after[1]}})
    return locked


# A new worker.load_changed event when CPU or memory use moved by this many points since the last one, or
# any count changed (held cores, GB and nodes of live instances, capacity, nodes running): not every reading.
# The last one is looked for in this window only (a bounded read of the journal); older, a steady worker's
# figures are journalled again: once a day at most.
LOAD_EVENT_STEP = 5
LOAD_EVENT_WINDOW = timedelta(days=1)
LOAD_COUNTS = ("held_cpu", "cpu_cores", "held_memory", "memory_gb", "held_nodes", "max_nodes", "nodes_running")
LOAD_PERCENTS = ("cpu_usage_percent", "memory_usage_percent")


def worker_load(worker: Worker, *, peak: tuple | None = None) -> dict:
    """What the fleet's bars show: cores, GB and nodes the worker is committed to from now on (the capacity
    ledger: its lablet instances, session labs and warm labs, at their busiest moment ahead), of its capacity
    (and as percentages), and CPU and memory use and nodes running as CML last reported them. One round of
    the ledger, unless the caller read it for many workers at once (`peak`: ledger.commitments' peak)."""
    peak = ledger.committed(worker)["peak"] if peak is None else peak
    held = {"held_cpu": peak[0], "held_memory": peak[1], "held_nodes": peak[3]}
    cpu, memory = worker.cpu_usage_percent, worker.memory_usage_percent
    return {
        **held, "cpu_cores": worker.cpu_cores, "memory_gb": worker.memory_gb, "max_nodes": worker.max_nodes,
        "cpu_held_percent": percent(held["held_cpu"], worker.cpu_cores),
        "memory_held_percent": percent(held["held_memory"], worker.memory_gb),
        "nodes_held_percent": percent(held["held_nodes"], worker.max_nodes),
        "cpu_usage_percent": None if cpu is None else round(cpu),
        "memory_usage_percent": None if memory is None else round(memory),
        "nodes_running": worker.nodes_running,
    }


def _load_moved(before: dict | None, after: dict) -> bool:
    if before is None:
        return True
    if any(before.get(name) != after[name] for name in LOAD_COUNTS):
        return True
    for name in LOAD_PERCENTS:
        old, new = before.get(name), after[name]
        if (old is None) != (new is None) or (new is not None and abs(new - old) >= LOAD_EVENT_STEP):
            return True
    return False


def _load_event(worker: Worker, *, actor: str, peak: tuple | None = None) -> None:
    """`worker.load_changed` with the new figures (worker_load) when they moved since the worker's last one:
    the fleet's bars follow it live (static/js/live.js), within a health poll."""
    last = (AuditEvent.objects.filter(resource_type="worker", resource_id=worker.public_id,
                                      event_type="worker.load_changed",
                                      timestamp__gte=timezone.now() - LOAD_EVENT_WINDOW)
            .order_by("-id").values_list("metadata", flat=True).first())
    figures = worker_load(worker, peak=peak)
    if _load_moved(last, figures):
        audit_record(event_type="worker.load_changed", actor=actor, resource_type="worker",
                     resource_id=worker.public_id, action="worker.cml_health", metadata=figures)


def worker_cml_health(*, worker: Worker, actor: str = "system") -> Worker:
    return _record(worker, _probe(worker), actor=actor)


def worker_cml_health_begin(*, worker: Worker, actor: str) -> str:
    """Enqueue worker_cml_health for `worker` (it asks CML); returns the task's id, for the request to await."""
    return enqueue(HEALTH_TASK, worker.pk, actor, task_name=f"cml_health-{worker.public_id}")


def worker_cml_health_for_task(*, worker_pk: int, actor: str) -> dict:
    """worker_cml_health as the task runs it: a refusal is its result, for the awaiting request."""
    return reporting(lambda: worker_cml_health(worker=Worker.objects.get(pk=worker_pk), actor=actor))


async def worker_cml_health_finish(*, task_id: str, worker_pk: int) -> Worker:
    """Await the check without a thread, at most TASK_WAIT_SECONDS (a refusal it reported is raised here),
    then the worker as it is (its last_cml_sync_at tells whether the check has run)."""
    await await_task(task_id, seconds=settings.TASK_WAIT_SECONDS)
    return await Worker.objects.select_related("template").aget(pk=worker_pk)


def worker_cml_health_all(*, actor: str = "system") -> dict:
    """Check every running worker's CML concurrently (network in threads, database writes here)."""
    workers = list(Worker.objects.filter(status=WorkerStatus.RUNNING))
    if not workers:
        return {"checked": 0, "available": 0}
    with ThreadPoolExecutor(max_workers=max(1, min(settings.CML_HEALTH_CONCURRENCY, len(workers)))) as pool:
        results = list(pool.map(_probe, workers))
    # What every worker is committed to, read from the ledger once for the whole pass (not per worker).
    committed = ledger.commitments([worker.pk for worker in workers], timezone.now())
    nothing = (0,) * len(ledger.DIMENSIONS)
    available = 0
    for worker, status in zip(workers, results):
        peak = committed[worker.pk]["peak"] if worker.pk in committed else nothing
        try:
            available += _record(worker, status, actor=actor, peak=peak).cml_service_status == "available"
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
