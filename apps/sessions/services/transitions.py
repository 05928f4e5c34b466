"""The only writers of `status` for sessions and session labs (tests/test_status_writes.py scans for it).

Each checks the edge against apps/sessions/lifecycle.py, writes the row with one UPDATE that also
filters on the state the caller read (compare-and-swap: a row that moved on meanwhile is not counted)
and journals the change, in one transaction. The one exception is the reaping of stale sessions, which
deletes and journals them in bulk statements (services/queue.py, docs/lifecycle.md).
"""

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record, audit_record_many
from apps.core.errors import InvalidTransition
from apps.sessions.lifecycle import LAB_TRANSITIONS, SESSION_EVENTS, SESSION_TRANSITIONS
from apps.sessions.models import LabStatus, Session, SessionLab


@transaction.atomic(savepoint=False)
def session_transition(*, session_id, source: str, to: str, actor: str, metadata: dict, **fields) -> bool:
    """Move the session from `source` (the state the caller read, under the pool's lock) to `to`, writing
    `fields` too, and journal it as `session.<event>` (SESSION_EVENTS: activated, ended) with `metadata`.
    False, and nothing journalled, when the session is no longer in `source`."""
    return bool(session_transitions_many(moves=[(session_id, fields, metadata)], source=source, to=to, actor=actor))


@transaction.atomic(savepoint=False)
def session_transitions_many(*, moves: list[tuple], source: str, to: str, actor: str) -> list:
    """The one writer of a session's status: session_transition for one or many sessions (a promotion hands
    out several workers). `moves` are (session_id, fields, metadata); one UPDATE each, and the sessions moved
    journalled with one INSERT. Returns their ids."""
    if to not in SESSION_TRANSITIONS.get(source, ()):
        raise InvalidTransition("Session", ", ".join(str(m[0]) for m in moves), source, to)
    event = f"session.{SESSION_EVENTS[to]}"
    moved, rows = [], []
    for session_id, fields, metadata in moves:
        if Session.objects.filter(pk=session_id, status=source).update(status=to, **fields):
            moved.append(session_id)
            rows.append({"event_type": event, "actor": actor, "resource_type": "session",
                         "resource_id": str(session_id), "action": event, "metadata": metadata})
    audit_record_many(rows)
    return moved


@transaction.atomic(savepoint=False)
def session_lab_transition(*, lab: SessionLab, to: str, actor: str, reason: str, **fields) -> bool:
    """Move a worker's lab slot from its status as read (`lab`, locked by the caller) to `to`, writing
    `fields` too (`updated_at` is stamped), and journal it as `session_lab.<to>` with the slot's worker,
    its lab and the principal it belongs to (the ones dropped, for EMPTY) and the reason. False, and nothing journalled, when the slot moved on meanwhile.
    An EMPTY slot holds no capacity: its need and `held_since` are cleared here (the capacity ledger)."""
    source = lab.status
    if to not in LAB_TRANSITIONS.get(source, ()):
        raise InvalidTransition("Session lab", str(lab.pk), source, to)
    fields.setdefault("updated_at", timezone.now())
    if to == LabStatus.EMPTY:
        fields.update(cpu_cores=0, memory_gb=0, storage_gb=0, node_count=0, held_since=None)
    if not SessionLab.objects.filter(pk=lab.pk, status=source).update(status=to, **fields):
        return False
    event = f"session_lab.{to}"
    audit_record(event_type=event, actor=actor, resource_type="session_lab", resource_id=str(lab.pk),
                 action="session_lab.transition",
                 metadata={"from": source, "to": to, "reason": reason, "worker_pk": lab.worker_id, **{
                     # the lab it holds now; for EMPTY, the one it dropped
                     name: getattr(lab, name) if to == LabStatus.EMPTY else fields.get(name, getattr(lab, name))
                     for name in ("cml_lab_id", "topology_sha256", "owner_key")}})
    return True
