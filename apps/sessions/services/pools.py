"""Which workers serve which session pool (Worker.session_pool), set by operators in the admin."""

from django.db import transaction

from apps.audit.services import audit_record
from apps.workers.models import Worker
from apps.core.errors import ValidationFailed


@transaction.atomic
def worker_session_pool_set(*, worker: Worker, pool: str, actor: str) -> Worker:
    """Put a worker in a session pool (blank: none). Its active session, if any, keeps it until it ends;
    waiting sessions of the new pool get it at the next promotion (a read of the queue or the reaper)."""
    pool = (pool or "").strip()
    if len(pool) > 50:
        raise ValidationFailed("A pool name has at most 50 characters.", errors={"session_pool": ["Too long."]})
    before = Worker.objects.select_for_update().values_list("session_pool", flat=True).get(pk=worker.pk)
    if before == pool:
        return worker
    Worker.objects.filter(pk=worker.pk).update(session_pool=pool)
    worker.session_pool = pool
    audit_record(event_type="worker.session_pool_changed", actor=actor, resource_type="worker",
                 resource_id=worker.public_id, action="worker.session_pool_set",
                 metadata={"from": before, "to": pool})
    return worker
