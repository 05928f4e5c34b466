"""The shared lab of each worker: acquire (start or attach), release, destroy, and the CML teardown.

A worker's SessionLab row is its lab slot and the lock of every decision about it: two POST /lab on
one worker are serialised on it, so only one of them ever imports a lab. CML calls happen between
committed decisions, never inside a transaction:

    decide (lock slot: attach, wait, refuse, or mark STARTING with a token)  →  CML import
    → record the lab id  →  CML start (wait) + nodes  →  RUNNING (if the token still matches)

A lab that is dropped (destroyed, replaced, failed, or found stuck) becomes a LabTeardown row in the
same transaction; a django-q2 task deletes it on CML after the commit, and the reaper re-dispatches
teardowns that did not finish, so no CML lab is left behind even across restarts.
"""

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.services import audit_record
from apps.sessions.lifecycle import LabStatus, SessionStatus
from apps.sessions.models import LabClaim, LabTeardown, Session, SessionLab
from apps.sessions.selectors import NO_LAB, SESSION_NOT_ACTIVE, Principal, session_get_active
from apps.sessions.services import storage
from apps.sessions.services.transitions import session_lab_transition
from apps.workers import cml
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services.cml import cml_credentials
from labmanager.errors import Conflict, Locked, NotFound, UpstreamUnavailable, ValidationFailed

log = logging.getLogger(__name__)

BUSY = "Lab currently busy"  # the seed's 423 detail
IN_USE = "Lab still in use"  # the seed's 409 detail
WAIT_POLL_SECONDS = 0.2  # an acquire of the topology another request is starting polls this often
TEARDOWN_TASK = "apps.sessions.tasks.session_lab_teardown"
TEARDOWN_RETRY_SECONDS = 60  # the reaper re-dispatches an unfinished teardown after attempts × this (≤ 1 h)
STUCK_MARGIN_SECONDS = 120  # a STARTING lab this long past the start timeout was abandoned (process died)


@dataclass(frozen=True)
class AcquiredLab:
    reused: bool
    devices: list[dict]


def lab_title(token) -> str:
    """The CML title of a lab started for sessions: finds a lab whose id was never recorded."""
    return f"labmanager-session-{token}"


def _audit(session_id, *, event: str, actor: str, metadata: dict, success: bool = True, error: str = "") -> None:
    audit_record(event_type=f"session.{event}", actor=actor, resource_type="session", resource_id=str(session_id),
                 action=f"session.{event}", success=success, error=error, metadata=metadata)


def _teardown_later(*, worker_id: int, cml_lab_id: str, sha256: str = "", reason: str) -> None:
    """Record a CML lab to delete; the task is dispatched once this transaction commits."""
    if not cml_lab_id:
        return
    teardown = LabTeardown.objects.create(worker_id=worker_id, cml_lab_id=cml_lab_id, topology_sha256=sha256,
                                          reason=reason[:100])
    transaction.on_commit(lambda: teardown_dispatch(teardown_ids=[teardown.pk]))


def teardown_dispatch(*, teardown_ids: list[int]) -> None:
    """Hand teardowns to the django-q2 cluster (its ORM broker keeps them across restarts)."""
    from django_q.tasks import async_task

    for teardown_id in teardown_ids:
        async_task(TEARDOWN_TASK, teardown_id, task_name=f"session-lab-teardown-{teardown_id}")


def _credentials(worker: Worker) -> dict:
    creds = cml_credentials(worker)
    if creds is None:
        raise UpstreamUnavailable(f"Worker {worker.public_id} has no CML address yet.")
    return creds


def _slot_locked(worker_id: int) -> SessionLab:
    SessionLab.objects.get_or_create(worker_id=worker_id)
    return SessionLab.objects.select_for_update().get(worker_id=worker_id)


def _recount(lab_ids) -> None:
    """ref_count = the claims that really exist (one UPDATE)."""
    claims = LabClaim.objects.filter(lab=OuterRef("pk")).order_by().values("lab").annotate(n=Count("pk")).values("n")
    SessionLab.objects.filter(pk__in=list(lab_ids)).update(ref_count=Coalesce(Subquery(claims), 0))


def claims_drop(*, session_ids: list, worker_ids: list, actor: str) -> int:
    """Drop the lab claims of these sessions (ended or reaped): the labs stay up, one reference fewer.
    Locks the lab slots of their workers first (the only labs they can hold a claim on)."""
    worker_ids = sorted({w for w in worker_ids if w is not None})
    if worker_ids:
        list(SessionLab.objects.select_for_update().filter(worker_id__in=worker_ids).order_by("pk"))
    claims = LabClaim.objects.filter(session_id__in=session_ids)
    lab_ids = set(claims.values_list("lab_id", flat=True))
    if not lab_ids:
        return 0
    dropped, _ = claims.delete()
    _recount(lab_ids)
    return dropped


def _device(node: cml.CmlNode, *, lab_id: str, worker: Worker) -> dict:
    raw = dataclasses.asdict(node)
    raw.update({"lab_id": lab_id, "worker_id": worker.public_id,
                "host": worker.ip_address or worker.private_ip_address})
    return {"name": node.label, "raw": raw}


# --- acquire ------------------------------------------------------------------------------------------

@dataclass
class _Decision:
    kind: str  # "attached", "wait" or "start"
    devices: list | None = None
    token: uuid.UUID | None = None
    lab_pk: int | None = None


def _decide(*, session: Session, staged: storage.StagedUpload, reuse: bool, actor: str) -> _Decision:
    sha = staged.topology_sha256
    with transaction.atomic():
        slot = _slot_locked(session.worker_id)
        if not Session.objects.filter(pk=session.pk, status=SessionStatus.ACTIVE, worker_id=session.worker_id).exists():
            raise Locked(SESSION_NOT_ACTIVE)  # ended or reaped since the request began
        claim = LabClaim.objects.filter(session_id=session.pk).first()
        if slot.status == LabStatus.RUNNING and slot.topology_sha256 == sha and reuse:
            if claim is None:
                LabClaim.objects.create(session_id=session.pk, lab=slot)
                _recount([slot.pk])
            _audit(session.pk, event="lab_acquired", actor=actor, metadata={
                "worker_id": session.worker.public_id, "topology_sha256": sha, "cml_lab_id": slot.cml_lab_id,
                "reused": True})
            return _Decision("attached", devices=slot.devices)
        if slot.status == LabStatus.STARTING:
            if slot.topology_sha256 == sha and reuse:
                return _Decision("wait")
            raise Locked(BUSY)
        if slot.status == LabStatus.RUNNING and slot.ref_count > 0:
            raise Locked(BUSY)  # another topology (or reuse=false) while sessions hold the running one
        # Nothing runs, or an idle lab (no claims) that is not the one wanted: replace it.
        old_lab, old_sha = slot.cml_lab_id, slot.topology_sha256
        token = uuid.uuid4()
        session_lab_transition(labs=SessionLab.objects.filter(pk=slot.pk, status=slot.status), to=LabStatus.STARTING,
                               topology_sha256=sha, topology_name=staged.topology_name[:255], cml_lab_id="",
                               devices=[], start_token=token, started_at=None, last_error="")
        LabClaim.objects.filter(lab=slot).delete()  # an idle lab has none; belt and braces
        if claim is not None:
            claim.delete()
        LabClaim.objects.create(session_id=session.pk, lab=slot)
        _recount([slot.pk])
        if old_lab:
            _teardown_later(worker_id=slot.worker_id, cml_lab_id=old_lab, sha256=old_sha, reason="replaced")
            _audit(session.pk, event="lab_destroyed", actor=actor, metadata={
                "worker_id": session.worker.public_id, "topology_sha256": old_sha, "cml_lab_id": old_lab,
                "reason": "idle lab replaced by another topology"})
        return _Decision("start", token=token, lab_pk=slot.pk)


def _abandon(*, lab_pk: int, token, cml_lab_id: str, error: str, session_id, actor: str) -> None:
    """A start failed (or its lab was destroyed meanwhile): free the slot if it is still ours, and make
    sure the CML lab it may have created is deleted."""
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().get(pk=lab_pk)
        mine = slot.status == LabStatus.STARTING and slot.start_token == token
        if mine:
            LabClaim.objects.filter(lab=slot).delete()
            session_lab_transition(labs=SessionLab.objects.filter(pk=slot.pk), to=LabStatus.EMPTY, ref_count=0,
                                   cml_lab_id="", topology_sha256="", topology_name="", devices=[], start_token=None,
                                   last_error=error[:500])
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=cml_lab_id, sha256=slot.topology_sha256,
                        reason="start failed" if mine else "destroyed while starting")
        _audit(session_id, event="lab_acquired", actor=actor, success=False, error=error[:500],
               metadata={"worker_pk": slot.worker_id, "cml_lab_id": cml_lab_id})


def _cml_failure(exc: cml.CmlError, *, during: str):
    if exc.kind == cml.CmlError.REFUSED and during == "import":
        return ValidationFailed(f"CML refused the topology: {exc}", errors={"topology": [str(exc)]})
    return UpstreamUnavailable(f"CML failed to {during} the lab: {exc}")


def _start(*, session: Session, decision: _Decision, staged: storage.StagedUpload, actor: str) -> AcquiredLab:
    worker = session.worker
    lab_id = ""
    try:
        creds = _credentials(worker)
        try:
            lab_id = cml.cml_lab_import(**creds, topology_yaml=staged.topology_text, title=lab_title(decision.token))
        except cml.CmlError as exc:
            raise _cml_failure(exc, during="import") from exc
        recorded = (SessionLab.objects.filter(pk=decision.lab_pk, status=LabStatus.STARTING, start_token=decision.token)
                    .update(cml_lab_id=lab_id, updated_at=timezone.now()))
        if not recorded:
            raise Locked("The lab was destroyed while it was starting")
        try:
            cml.cml_lab_start(**creds, lab_id=lab_id, wait=True,
                              wait_timeout=settings.SESSION_LAB_START_TIMEOUT_SECONDS)
            nodes = cml.cml_lab_nodes(**creds, lab_id=lab_id)
        except cml.CmlError as exc:
            raise _cml_failure(exc, during="start") from exc
    except BaseException as exc:
        _abandon(lab_pk=decision.lab_pk, token=decision.token, cml_lab_id=lab_id,
                 error=getattr(exc, "detail", None) or str(exc) or type(exc).__name__, session_id=session.pk,
                 actor=actor)
        raise
    devices = [_device(node, lab_id=lab_id, worker=worker) for node in nodes]
    with transaction.atomic():
        SessionLab.objects.select_for_update().get(pk=decision.lab_pk)
        done = session_lab_transition(
            labs=SessionLab.objects.filter(pk=decision.lab_pk, start_token=decision.token), to=LabStatus.RUNNING,
            devices=devices, start_token=None, started_at=timezone.now())
        if done:
            _audit(session.pk, event="lab_acquired", actor=actor, metadata={
                "worker_id": worker.public_id, "topology_sha256": staged.topology_sha256, "cml_lab_id": lab_id,
                "topology_name": staged.topology_name, "reused": False, "extra_files": staged.extra_names})
    if not done:  # destroyed (DELETE /lab) while it came up
        _abandon(lab_pk=decision.lab_pk, token=decision.token, cml_lab_id=lab_id,
                 error="destroyed while starting", session_id=session.pk, actor=actor)
        raise Locked("The lab was destroyed while it was starting")
    return AcquiredLab(reused=False, devices=devices)


def session_lab_acquire(*, session_id, principal: Principal, topology, extra_files: list, reuse: bool = True,
                        content_length=None) -> AcquiredLab:
    """POST /lab: attach to the worker's running lab of the same topology (reuse), or start it.

    404 unknown session, 423 not active / another topology in use / being started; 400/413/422 for the
    upload; 502 when CML fails. The upload is kept in the session's directory only on success."""
    session = session_get_active(session_id=session_id, principal=principal)
    from apps.sessions.services.queue import session_touch

    session_touch(session=session)
    storage.upload_check_length(content_length)
    staged = storage.upload_stage(topology=topology, extra_files=extra_files)
    try:
        deadline = time.monotonic() + settings.SESSION_LAB_START_TIMEOUT_SECONDS
        while True:
            decision = _decide(session=session, staged=staged, reuse=reuse, actor=principal.actor)
            if decision.kind != "wait":
                break
            if time.monotonic() > deadline:
                raise Locked(BUSY)
            time.sleep(WAIT_POLL_SECONDS)
        if decision.kind == "attached":
            result = AcquiredLab(reused=True, devices=decision.devices)
        else:
            result = _start(session=session, decision=decision, staged=staged, actor=principal.actor)
        storage.stage_commit(staged, session_id=session.pk)
        return result
    finally:
        storage.stage_discard(staged)


# --- release and destroy -------------------------------------------------------------------------------

def session_lab_release(*, session_id, principal: Principal) -> bool:
    """POST /lab/release: drop this session's claim (the lab stays up, idle when nobody else holds it).
    Without a claim nothing changes (False); 404 when no lab runs on the worker at all."""
    session = session_get_active(session_id=session_id, principal=principal)
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().filter(worker_id=session.worker_id).first()
        claim = LabClaim.objects.filter(session_id=session.pk).first()
        if claim is None:
            if slot is None or slot.status != LabStatus.RUNNING:
                raise NotFound(NO_LAB)
            return False
        claim.delete()
        _recount([claim.lab_id])
        _audit(session.pk, event="lab_released", actor=principal.actor, metadata={
            "worker_id": session.worker.public_id, "topology_sha256": slot.topology_sha256 if slot else "",
            "cml_lab_id": slot.cml_lab_id if slot else ""})
    storage.session_files_remove([session.pk])
    return True


def session_lab_destroy(*, session_id, principal: Principal, force: bool = True) -> bool:
    """DELETE /lab: tear the worker's lab down whatever its claims (force) or only when unclaimed (409
    otherwise). True when a teardown was dispatched (202), False when no lab was there (204)."""
    session = session_get_active(session_id=session_id, principal=principal)
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().filter(worker_id=session.worker_id).first()
        if slot is None or slot.status == LabStatus.EMPTY:
            return False
        if not force and slot.ref_count > 0:
            raise Conflict(IN_USE, extra={"ref_count": slot.ref_count})
        holders = list(LabClaim.objects.filter(lab=slot).values_list("session_id", flat=True))
        LabClaim.objects.filter(lab=slot).delete()
        session_lab_transition(labs=SessionLab.objects.filter(pk=slot.pk), to=LabStatus.EMPTY, ref_count=0,
                               cml_lab_id="", topology_sha256="", topology_name="", devices=[], start_token=None)
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=slot.cml_lab_id, sha256=slot.topology_sha256,
                        reason="destroyed")
        _audit(session.pk, event="lab_destroyed", actor=principal.actor, metadata={
            "worker_id": session.worker.public_id, "topology_sha256": slot.topology_sha256,
            "cml_lab_id": slot.cml_lab_id, "force": force, "ref_count": slot.ref_count,
            "was": slot.status, "holders": [str(h) for h in holders]})
    storage.session_files_remove(holders)
    return True


def session_lab_destroy_by_operator(*, lab: SessionLab, actor: str) -> bool:
    """The admin's "tear down" action: like DELETE /lab with force, without a session."""
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().get(pk=lab.pk)
        if slot.status == LabStatus.EMPTY:
            return False
        holders = list(LabClaim.objects.filter(lab=slot).values_list("session_id", flat=True))
        LabClaim.objects.filter(lab=slot).delete()
        session_lab_transition(labs=SessionLab.objects.filter(pk=slot.pk), to=LabStatus.EMPTY, ref_count=0,
                               cml_lab_id="", topology_sha256="", topology_name="", devices=[], start_token=None)
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=slot.cml_lab_id, sha256=slot.topology_sha256,
                        reason="destroyed by an operator")
        audit_record(event_type="session.lab_destroyed", actor=actor, resource_type="session_lab",
                     resource_id=str(slot.pk), action="session.lab_destroyed",
                     metadata={"worker_pk": slot.worker_id, "cml_lab_id": slot.cml_lab_id,
                               "holders": [str(h) for h in holders]})
    storage.session_files_remove(holders)
    return True


# --- teardown and recovery (the reaper) ------------------------------------------------------------------

def lab_teardown_run(*, teardown_id: int) -> bool:
    """Delete one dropped lab on CML (stop, wipe, remove; a lab already gone is fine). True when done."""
    teardown = LabTeardown.objects.select_related("worker").filter(pk=teardown_id).first()
    if teardown is None:
        return True  # done by an earlier attempt
    now = timezone.now()
    LabTeardown.objects.filter(pk=teardown.pk).update(attempts=F("attempts") + 1, last_attempt_at=now)
    worker = teardown.worker
    if worker.status != WorkerStatus.TERMINATED:  # a terminated worker took its labs with it
        creds = cml_credentials(worker)
        try:
            if creds is None:
                raise cml.CmlError("the worker has no CML address", kind=cml.CmlError.UNREACHABLE)
            cml.cml_lab_delete(**creds, lab_id=teardown.cml_lab_id, force=True, missing_ok=True)
        except cml.CmlError as exc:
            LabTeardown.objects.filter(pk=teardown.pk).update(last_error=str(exc)[:500])
            log.warning("Teardown of CML lab %s on %s failed (attempt %d): %s", teardown.cml_lab_id,
                        worker.public_id, teardown.attempts + 1, exc)
            return False
    with transaction.atomic():
        if LabTeardown.objects.filter(pk=teardown.pk).delete()[0]:
            audit_record(event_type="session.lab_deleted", actor="system", resource_type="session_lab",
                         resource_id=str(teardown.cml_lab_id), action="session.lab_deleted",
                         metadata={"worker_id": worker.public_id, "cml_lab_id": teardown.cml_lab_id,
                                   "topology_sha256": teardown.topology_sha256, "reason": teardown.reason})
    return True


def labs_recover() -> dict:
    """The reaper's lab pass: labs stuck STARTING (their request's process died) are dropped (a lab it
    imported but never recorded is found on CML by its title); unfinished teardowns are re-dispatched."""
    now = timezone.now()
    stuck_before = now - timedelta(seconds=settings.SESSION_LAB_START_TIMEOUT_SECONDS + STUCK_MARGIN_SECONDS)
    stuck = 0
    for slot in SessionLab.objects.select_related("worker").filter(status=LabStatus.STARTING, updated_at__lt=stuck_before):
        found = [slot.cml_lab_id] if slot.cml_lab_id else []
        creds = cml_credentials(slot.worker)
        if not found and creds is not None and slot.start_token:
            try:
                found = cml.cml_lab_ids_by_title(**creds, title=lab_title(slot.start_token))
            except cml.CmlError as exc:
                log.warning("Cannot look for the lab of stuck start %s: %s", slot.start_token, exc)
                continue
        with transaction.atomic():
            locked = SessionLab.objects.select_for_update().get(pk=slot.pk)
            if locked.status != LabStatus.STARTING or locked.start_token != slot.start_token:
                continue
            LabClaim.objects.filter(lab=locked).delete()
            session_lab_transition(labs=SessionLab.objects.filter(pk=slot.pk), to=LabStatus.EMPTY, ref_count=0,
                                   cml_lab_id="", topology_sha256="", topology_name="", devices=[], start_token=None,
                                   last_error="abandoned while starting")
            for lab_id in found:
                _teardown_later(worker_id=slot.worker_id, cml_lab_id=lab_id, sha256=slot.topology_sha256,
                                reason="abandoned while starting")
            stuck += 1
    due = []
    for teardown in LabTeardown.objects.all():
        wait = min(TEARDOWN_RETRY_SECONDS * max(teardown.attempts, 1), 3600)
        last = teardown.last_attempt_at or teardown.requested_at
        if (now - last).total_seconds() >= wait:
            due.append(teardown.pk)
    if due:
        teardown_dispatch(teardown_ids=due)
    return {"stuck_starts_dropped": stuck, "teardowns_redispatched": len(due)}
