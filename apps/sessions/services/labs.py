"""The shared lab of each worker: acquire (start or attach), release, destroy, and the CML teardown.

A worker's SessionLab row is its lab slot and the lock of every decision about it: two POST /lab on
one worker are serialised on it, so only one of them ever imports a lab. CML calls happen between
committed decisions, never inside a transaction:

    decide (lock slot: attach, wait, refuse, or mark STARTING with a token)  →  CML import
    → record the lab id  →  CML start, converged?, nodes  →  RUNNING (if the token still matches)

A lab holds capacity on its worker from STARTING until it goes EMPTY: its topology's CPUs, memory (GB, rounded
up), disk and nodes are stored on the slot and are its rows in the capacity ledger (apps.workers.ledger). A
decision locks the worker's row first, then the slot (this order wherever both are taken; lablet placement locks
its instance, then the worker, and never a slot, so the two cannot deadlock). The worker lock is FOR NO KEY
UPDATE: it excludes placement's FOR UPDATE and another decision's, but not the key-share lock PostgreSQL takes
on the worker for a new row that refers to it (a LabTeardown written by a transaction holding a slot), which
would otherwise wait for us while we wait for its slot. A start reads the ledger again under the worker lock
and refuses with 409 `insufficient_capacity` a lab that does not fit beside the lablet instances and warm labs
the worker holds.

The decision is the short, synchronous part of POST /lab (`session_lab_acquire_begin`); the rest can
take minutes and runs on the event loop (`session_lab_acquire_finish`, awaited by the async view): it
sleeps with asyncio between polls, and only single steps (a transaction, one CML call) run in threads.

A lab that is dropped (destroyed, replaced, failed, or found stuck) becomes a LabTeardown row in the
same transaction; a django-q2 task deletes it on CML after the commit, and the reaper re-dispatches
teardowns that did not finish, so no CML lab is left behind even across restarts.
"""

import asyncio
import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.audit.services import audit_record
from apps.sessions.models import LabClaim, LabStatus, LabTeardown, Session, SessionLab, SessionStatus
from apps.sessions.selectors import NO_LAB, SESSION_NOT_ACTIVE, Principal, session_get_active
from apps.sessions.services import storage
from apps.sessions.services.transitions import session_lab_transition
from apps.workers import cml, ledger
from apps.workers.cml.topology_policy import TopologySummary, topology_check
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services.cml import cml_credentials
from apps.core.errors import Conflict, Locked, NotFound, UpstreamUnavailable, ValidationFailed

log = logging.getLogger(__name__)

BUSY = "Lab currently busy"  # the seed's 423 detail
IN_USE = "Lab still in use"  # the seed's 409 detail
WAIT_POLL_SECONDS = 0.2  # an acquire of the topology another request is starting polls this often
START_POLL_SECONDS = 2.0  # a start asks CML whether its lab converged this often (as cml_lab_start(wait=True))
TEARDOWN_TASK = "apps.sessions.tasks.session_lab_teardown"
TEARDOWN_RETRY_SECONDS = 60  # the reaper re-dispatches an unfinished teardown after attempts × this (≤ 1 h)
STUCK_MARGIN_SECONDS = 120  # a STARTING lab this long past the start timeout was abandoned (process died)


NO_CAPACITY = "The worker has no room for this lab"  # 409 insufficient_capacity
NEED_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "node_count")


def lab_need(summary: TopologySummary) -> dict:
    """What a topology holds on its worker while it runs (SessionLab's NEED_FIELDS): memory rounded up to GB."""
    return {"cpu_cores": summary.cpus, "memory_gb": -(-summary.memory_mb // 1024), "storage_gb": summary.disk_gb,
            "node_count": summary.nodes}


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
    """Drop the lab claims of these sessions (ended or reaped): the labs stay up, one reference fewer, for
    their principal's next session (anonymous clients are one principal: Session.lab_owner_key). Locks the lab
    slots of their workers first (the only labs they can hold a claim on)."""
    worker_ids = sorted({w for w in worker_ids if w is not None})
    if worker_ids:
        list(SessionLab.objects.select_for_update().filter(worker_id__in=worker_ids).order_by("pk"))
    claims = LabClaim.objects.filter(session_id__in=session_ids)
    lab_ids = set(claims.values_list("lab_id", flat=True))
    dropped = 0
    if lab_ids:
        dropped, _ = claims.delete()
        _recount(lab_ids)
    return dropped


def labs_drop_owned(*, owner_keys: list[str], actor: str, reason: str, worker_ids: list | None = None) -> int:
    """Tear down the labs of these principals (SessionLab.owner_key), running or starting, whatever their
    claims: nobody may use them any more (an anonymous session's at its end; a deleted user's). Each slot
    goes EMPTY (journalled) and its CML lab becomes a teardown. Locks the slots by pk; returns how many."""
    slots = SessionLab.objects.select_for_update().filter(owner_key__in=owner_keys).exclude(status=LabStatus.EMPTY)
    if worker_ids is not None:
        slots = slots.filter(worker_id__in=worker_ids)
    dropped = 0
    for slot in slots.order_by("pk"):
        holders = [str(h) for h in LabClaim.objects.filter(lab=slot).values_list("session_id", flat=True)]
        LabClaim.objects.filter(lab=slot).delete()
        session_lab_transition(lab=slot, to=LabStatus.EMPTY, actor=actor, reason=reason, ref_count=0, cml_lab_id="",
                               topology_sha256="", topology_name="", devices=[], owner_key="", start_token=None)
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=slot.cml_lab_id, sha256=slot.topology_sha256,
                        reason=reason)
        audit_record(event_type="session.lab_destroyed", actor=actor, resource_type="session_lab",
                     resource_id=str(slot.pk), action="session.lab_destroyed",
                     metadata={"worker_pk": slot.worker_id, "cml_lab_id": slot.cml_lab_id, "reason": reason,
                               "holders": holders})
        dropped += 1
    return dropped


def _device(node: cml.CmlNode, *, lab_id: str, worker: Worker) -> dict:
    raw = dataclasses.asdict(node)
    raw.update({"lab_id": lab_id, "worker_id": worker.public_id,
                "host": worker.ip_address or worker.private_ip_address})
    return {"name": node.label, "raw": raw}


# --- acquire ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Decision:
    kind: str  # "attached", "wait" or "start"
    devices: list | None = None
    token: uuid.UUID | None = None
    lab_pk: int | None = None


@dataclass(frozen=True)
class PendingAcquire:
    """A POST /lab decided but not done: it waits for the start of its topology by another request
    ("wait"), or starts the lab itself ("start", holding the slot's token). The staged upload is its own
    until `session_lab_acquire_finish` commits it or it is given up (`session_lab_acquire_give_up`)."""

    session: Session
    actor: str
    staged: storage.StagedUpload
    reuse: bool
    decision: _Decision
    need: dict = dataclasses.field(default_factory=dict)  # lab_need() of the topology


def _decide(*, session: Session, staged: storage.StagedUpload, reuse: bool, actor: str, need: dict) -> _Decision:
    sha = staged.topology_sha256
    with transaction.atomic():
        # The worker's row first, then the slot (the module's docstring): a start books capacity on the worker.
        list(Worker.objects.select_for_update(no_key=True).filter(pk=session.worker_id))
        slot = _slot_locked(session.worker_id)
        if not Session.objects.filter(pk=session.pk, status=SessionStatus.ACTIVE, worker_id=session.worker_id).exists():
            raise Locked(SESSION_NOT_ACTIVE)  # ended or reaped since the request began
        claim = LabClaim.objects.filter(session_id=session.pk).first()
        if slot.status != LabStatus.EMPTY and slot.owner_key != session.lab_owner_key:
            return _decide_foreign(session=session, slot=slot, staged=staged, claim=claim, actor=actor, need=need)
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
        return _replace(session=session, slot=slot, staged=staged, claim=claim, actor=actor, need=need,
                        why="idle lab replaced by another topology")


def _decide_foreign(*, session: Session, slot: SessionLab, staged: storage.StagedUpload, claim,
                    actor: str, need: dict) -> _Decision:
    """The worker's lab is another principal's (it outlived that principal's session, kept for its next
    one): never attached to, waited for or shown. Idle, it is replaced (torn down) as an idle lab of another
    topology is; held or starting, the worker is busy, as for another topology."""
    if slot.status == LabStatus.RUNNING and slot.ref_count == 0:
        return _replace(session=session, slot=slot, staged=staged, claim=claim, actor=actor, need=need,
                        why="idle lab of another principal replaced")
    raise Locked(BUSY)


def _capacity_check(*, session: Session, slot: SessionLab, need: dict, now) -> None:
    """409 insufficient_capacity when the lab does not fit on its worker, from now on, beside everything else
    the worker holds (the ledger read again under the worker's row lock; the slot's own lab, replaced, left
    out). Journalled as every refused call is (`api_call.refused`)."""
    worker = Worker.objects.get(pk=session.worker_id)
    vector = (*(need.get(name, 0) for name in NEED_FIELDS), 0, 1)  # no console ports; one lab
    short = ledger.shortfall(worker, vector, now, ledger.OPEN_END, exclude={ledger.SESSION_LAB: slot.pk})
    if short is None:
        return
    # What is free is left out: it would tell any client of the pool (anonymous ones too) how much other work,
    # lablets of other tenants included, the worker holds.
    label = ledger.DIMENSION_LABELS[short["dimension"]]
    detail = (f"{NO_CAPACITY} (worker {worker.public_id}: {label}: the lab needs {short['needs']}, more than the "
              f"worker has free beside its other work; its capacity is {short['capacity']}).")
    raise Conflict(detail, code="insufficient_capacity", extra={
        "worker": worker.public_id, "dimension": short["dimension"], "needs": short["needs"],
        "capacity": short["capacity"]})


def _replace(*, session: Session, slot: SessionLab, staged: storage.StagedUpload, claim, actor: str,
             why: str, need: dict) -> _Decision:
    """Mark the (locked) slot STARTING for this session's principal, with this session's claim and the
    topology's need (when it fits on the worker: 409 otherwise); the idle lab it held, if any, is torn down."""
    now = timezone.now()
    _capacity_check(session=session, slot=slot, need=need, now=now)
    old_lab, old_sha = slot.cml_lab_id, slot.topology_sha256
    token = uuid.uuid4()
    session_lab_transition(lab=slot, to=LabStatus.STARTING, actor=actor,
                           reason=f"session {session.pk} starts its topology", topology_sha256=staged.topology_sha256,
                           topology_name=staged.topology_name[:255], cml_lab_id="", owner_key=session.lab_owner_key,
                           devices=[], start_token=token, started_at=None, last_error="", held_since=now,
                           **{name: need.get(name, 0) for name in NEED_FIELDS})
    LabClaim.objects.filter(lab=slot).delete()  # an idle lab has none; belt and braces
    if claim is not None:
        claim.delete()
    LabClaim.objects.create(session_id=session.pk, lab=slot)
    _recount([slot.pk])
    if old_lab:
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=old_lab, sha256=old_sha, reason="replaced")
        _audit(session.pk, event="lab_destroyed", actor=actor, metadata={
            "worker_id": session.worker.public_id, "topology_sha256": old_sha, "cml_lab_id": old_lab, "reason": why})
    return _Decision("start", token=token, lab_pk=slot.pk)


def _abandon(*, session: Session, decision: _Decision, cml_lab_id: str, error: str, actor: str) -> None:
    """A start failed, was cancelled, or its lab was destroyed meanwhile: free the slot if it is still ours,
    and make sure the CML lab it may have created is deleted (the one recorded on the slot when the caller
    lost the id: a start cancelled during its import step)."""
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().get(pk=decision.lab_pk)
        mine = slot.status == LabStatus.STARTING and slot.start_token == decision.token
        if mine:
            cml_lab_id = cml_lab_id or slot.cml_lab_id
            LabClaim.objects.filter(lab=slot).delete()
            session_lab_transition(lab=slot, to=LabStatus.EMPTY, actor=actor, reason=f"start failed: {error}"[:200],
                                   ref_count=0, cml_lab_id="", topology_sha256="", topology_name="", devices=[],
                                   owner_key="", start_token=None, last_error=error[:500])
        _teardown_later(worker_id=slot.worker_id, cml_lab_id=cml_lab_id, sha256=slot.topology_sha256,
                        reason="start failed" if mine else "destroyed while starting")
        _audit(session.pk, event="lab_acquired", actor=actor, success=False, error=error[:500],
               metadata={"worker_pk": slot.worker_id, "cml_lab_id": cml_lab_id})


def _cml_failure(exc: cml.CmlError, *, during: str):
    if exc.kind == cml.CmlError.REFUSED and during == "import":
        return ValidationFailed(f"CML refused the topology: {exc}", errors={"topology": [str(exc)]})
    return UpstreamUnavailable(f"CML failed to {during} the lab: {exc}")


def _cml_step(call, *, during: str, **kwargs):
    """One CML call (a few HTTP requests, each bounded by its timeout); its failure as the seed's error."""
    try:
        return call(**kwargs)
    except cml.CmlError as exc:
        raise _cml_failure(exc, during=during) from exc


def _import_step(pending: PendingAcquire) -> tuple[dict, str]:
    """CML import and the lab id recorded on the slot, in one step: a cancelled request lets its running
    step end, so an imported lab is always recorded (and found by `_abandon`) while the slot is ours."""
    creds = _credentials(pending.session.worker)
    decision = pending.decision
    lab_id = _cml_step(cml.cml_lab_import, during="import", **creds, topology_yaml=pending.staged.topology_text,
                       title=lab_title(decision.token))
    recorded = (SessionLab.objects.filter(pk=decision.lab_pk, status=LabStatus.STARTING, start_token=decision.token)
                .update(cml_lab_id=lab_id, updated_at=timezone.now()))
    if not recorded:
        with transaction.atomic():
            _teardown_later(worker_id=pending.session.worker_id, cml_lab_id=lab_id,
                            sha256=pending.staged.topology_sha256, reason="destroyed while starting")
        raise Locked("The lab was destroyed while it was starting")
    return creds, lab_id


def _running_step(pending: PendingAcquire, *, lab_id: str, nodes: list) -> AcquiredLab:
    """STARTING → RUNNING with the converged lab's devices, if the token still matches."""
    session, decision, staged = pending.session, pending.decision, pending.staged
    devices = [_device(node, lab_id=lab_id, worker=session.worker) for node in nodes]
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().get(pk=decision.lab_pk)
        done = (slot.status == LabStatus.STARTING and slot.start_token == decision.token and session_lab_transition(
            lab=slot, to=LabStatus.RUNNING, actor=pending.actor, reason=f"lab {lab_id} converged",
            devices=devices, start_token=None, started_at=timezone.now()))
        if done:
            _audit(session.pk, event="lab_acquired", actor=pending.actor, metadata={
                "worker_id": session.worker.public_id, "topology_sha256": staged.topology_sha256,
                "cml_lab_id": lab_id, "topology_name": staged.topology_name, "reused": False,
                "extra_files": staged.extra_names})
    if not done:  # destroyed (DELETE /lab) while it came up
        _abandon(session=session, decision=decision, cml_lab_id=lab_id, error="destroyed while starting",
                 actor=pending.actor)
        raise Locked("The lab was destroyed while it was starting")
    return AcquiredLab(reused=False, devices=devices)


async def _step(func, /, *args, **kwargs):
    """One short synchronous step in the request's thread, which then gives its database connection back
    (to the pool, or closed): a request that waits minutes holds none. Never inside a transaction (a
    test's: it runs the whole request in one)."""
    def run():
        try:
            return func(*args, **kwargs)
        finally:
            if not connection.in_atomic_block:
                connection.close()
    return await sync_to_async(run)()


def _still_starting(*, worker_id: int, sha256: str) -> bool:
    return SessionLab.objects.filter(worker_id=worker_id, status=LabStatus.STARTING, topology_sha256=sha256).exists()


async def _converge(*, creds: dict, lab_id: str) -> None:
    """Wait for CML to boot the lab on the event loop: one short check in a thread every START_POLL_SECONDS."""
    timeout = settings.SESSION_LAB_START_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    while not await sync_to_async(_cml_step)(cml.cml_lab_converged, during="start", **creds, lab_id=lab_id):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _cml_failure(cml.cml_convergence_timeout(url=creds["url"], lab_id=lab_id, wait_timeout=timeout),
                               during="start")
        await asyncio.sleep(min(START_POLL_SECONDS, left))


async def _start(pending: PendingAcquire) -> AcquiredLab:
    """import → record the lab id → start → converged → nodes → RUNNING; any failure, or the request's
    cancellation (the client went away), frees the slot and tears the CML lab down."""
    lab_id = ""
    try:
        creds, lab_id = await _step(_import_step, pending)
        await sync_to_async(_cml_step)(cml.cml_lab_start, during="start", **creds, lab_id=lab_id, wait=False)
        await _converge(creds=creds, lab_id=lab_id)
        nodes = await sync_to_async(_cml_step)(cml.cml_lab_nodes, during="start", **creds, lab_id=lab_id)
    except BaseException as exc:
        await asyncio.shield(_step(
            _abandon, session=pending.session, decision=pending.decision, cml_lab_id=lab_id, actor=pending.actor,
            error=getattr(exc, "detail", None) or str(exc) or type(exc).__name__))
        raise
    return await _step(_running_step, pending, lab_id=lab_id, nodes=nodes)


async def _wait_turn(pending: PendingAcquire) -> PendingAcquire:
    """Another request starts this topology: poll its slot until it is no longer STARTING it, then decide
    again (attach, start, or refuse); 423 BUSY after SESSION_LAB_START_TIMEOUT_SECONDS."""
    session, sha = pending.session, pending.staged.topology_sha256
    deadline = time.monotonic() + settings.SESSION_LAB_START_TIMEOUT_SECONDS
    while pending.decision.kind == "wait":
        if time.monotonic() > deadline:
            raise Locked(BUSY)
        await asyncio.sleep(WAIT_POLL_SECONDS)
        if not await _step(_still_starting, worker_id=session.worker_id, sha256=sha):
            pending = dataclasses.replace(pending, decision=await _step(
                _decide, session=session, staged=pending.staged, reuse=pending.reuse, actor=pending.actor,
                need=pending.need))
    return pending


def session_lab_acquire_begin(*, session_id, principal: Principal, topology, extra_files: list, reuse: bool = True,
                              content_length=None) -> AcquiredLab | PendingAcquire:
    """POST /lab, its short part: attach to the worker's running lab of the same topology (reuse), or
    decide to start it (or to wait for another request starting it): `session_lab_acquire_finish` does that
    without holding a thread.

    404 unknown session, 423 not active / another topology in use / being started, 409 (insufficient_capacity)
    when the worker has no room for the lab beside its lablet instances and warm labs; 400/413/422 for the
    upload, 422 for a topology the topology policy refuses (apps.workers.cml.topology_policy, as untrusted),
    before anything reaches CML. The upload is kept in the session's directory only on success."""
    session = session_get_active(session_id=session_id, principal=principal)
    from apps.sessions.services.queue import session_touch

    session_touch(session=session)
    storage.upload_check_length(content_length)
    staged = storage.upload_stage(topology=topology, extra_files=extra_files)
    try:
        summary = topology_check(staged.topology_text, trusted=False, field="topology")  # an upload: untrusted
        need = lab_need(summary)
        decision = _decide(session=session, staged=staged, reuse=reuse, actor=principal.actor, need=need)
        if decision.kind != "attached":
            return PendingAcquire(session=session, actor=principal.actor, staged=staged, reuse=reuse,
                                  decision=decision, need=need)
        storage.stage_commit(staged, session_id=session.pk)
        return AcquiredLab(reused=True, devices=decision.devices)
    except BaseException:
        storage.stage_discard(staged)
        raise


async def session_lab_acquire_finish(*, pending: PendingAcquire) -> AcquiredLab:
    """POST /lab, its long part, on the event loop: wait for the other request's start, or start the lab
    (up to SESSION_LAB_START_TIMEOUT_SECONDS; 502 when CML fails). Only short steps (a transaction, one CML
    call) run in threads; a cancelled request frees the slot it was starting."""
    try:
        pending = await _wait_turn(pending)
        if pending.decision.kind == "attached":
            result = AcquiredLab(reused=True, devices=pending.decision.devices)
        else:
            result = await _start(pending)
        await sync_to_async(storage.stage_commit)(pending.staged, session_id=pending.session.pk)
        return result
    finally:
        await asyncio.shield(sync_to_async(storage.stage_discard)(pending.staged))


def session_lab_acquire_give_up(*, pending: PendingAcquire) -> None:
    """A pending acquire that will never be finished (its client went away first): free the slot it
    decided to start, and drop its upload."""
    try:
        if pending.decision.kind == "start":
            _abandon(session=pending.session, decision=pending.decision, cml_lab_id="",
                     error="the request was cancelled", actor=pending.actor)
    finally:
        storage.stage_discard(pending.staged)


# --- release and destroy -------------------------------------------------------------------------------

def session_lab_release(*, session_id, principal: Principal) -> bool:
    """POST /lab/release: drop this session's claim (the lab stays up, idle when nobody else holds it).
    Without a claim nothing changes (False); 404 when no lab runs on the worker at all."""
    session = session_get_active(session_id=session_id, principal=principal)
    with transaction.atomic():
        slot = SessionLab.objects.select_for_update().filter(worker_id=session.worker_id).first()
        claim = LabClaim.objects.filter(session_id=session.pk).first()
        if claim is None:
            if slot is None or slot.status != LabStatus.RUNNING or slot.owner_key != session.lab_owner_key:
                raise NotFound(NO_LAB)  # another principal's lab is no lab to this session
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
        if slot is None or slot.status == LabStatus.EMPTY or slot.owner_key != session.lab_owner_key:
            return False  # nothing of this session's principal runs there (204): another's lab is left alone
        if not force and slot.ref_count > 0:
            raise Conflict(IN_USE, extra={"ref_count": slot.ref_count})
        holders = list(LabClaim.objects.filter(lab=slot).values_list("session_id", flat=True))
        LabClaim.objects.filter(lab=slot).delete()
        session_lab_transition(lab=slot, to=LabStatus.EMPTY, actor=principal.actor, reason="destroyed", ref_count=0,
                               cml_lab_id="", topology_sha256="", topology_name="", devices=[], owner_key="",
                               start_token=None)
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
        session_lab_transition(lab=slot, to=LabStatus.EMPTY, actor=actor, reason="destroyed by an operator",
                               ref_count=0, cml_lab_id="", topology_sha256="", topology_name="", devices=[],
                               owner_key="", start_token=None)
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
            session_lab_transition(lab=locked, to=LabStatus.EMPTY, actor="system", reason="abandoned while starting",
                                   ref_count=0, cml_lab_id="", topology_sha256="", topology_name="", devices=[],
                                   owner_key="", start_token=None, last_error="abandoned while starting")
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
