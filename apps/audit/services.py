"""The one audit/event hook: every change is recorded here, in the caller's transaction."""

import logging

from django.db import transaction

from apps.audit.models import AuditEvent

log = logging.getLogger(__name__)
SYSTEM_ACTOR = "system"


def audit_record(
    *,
    event_type: str,
    actor: str,
    resource_type: str,
    resource_id: str,
    action: str,
    success: bool = True,
    error: str = "",
    metadata: dict | None = None,
) -> AuditEvent:
    """Append one audit row; must be called inside the transaction of the change it records."""
    from labmanager.middleware import current_client_ip, current_trace_id

    trace_id = current_trace_id()
    event = AuditEvent.objects.create(
        event_type=event_type,
        actor=actor or SYSTEM_ACTOR,
        resource_type=resource_type,
        resource_id=resource_id,
        action=action,
        success=success,
        error=error,
        ip_address=current_client_ip(),
        trace_id="" if trace_id == "-" else trace_id,
        metadata=metadata or {},
    )
    transaction.on_commit(lambda: _publish(event))
    return event


def audit_record_many(events: list[dict]) -> list[AuditEvent]:
    """Append many audit rows at once (the scheduler's batch pass): each dict takes audit_record's
    keyword arguments. Same transaction rule, same live publication, one INSERT per 500 rows."""
    from labmanager.middleware import current_client_ip, current_trace_id

    trace_id = current_trace_id()
    ip = current_client_ip()
    rows = [
        AuditEvent(
            event_type=e["event_type"],
            actor=e.get("actor") or SYSTEM_ACTOR,
            resource_type=e["resource_type"],
            resource_id=e["resource_id"],
            action=e["action"],
            success=e.get("success", True),
            error=e.get("error", ""),
            ip_address=ip,
            trace_id="" if trace_id == "-" else trace_id,
            metadata=e.get("metadata") or {},
        )
        for e in events
    ]
    created = AuditEvent.objects.bulk_create(rows, batch_size=500)
    if created and created[0].pk is not None:
        transaction.on_commit(lambda: _publish_many(created))
    return created


def _publish(event: AuditEvent) -> None:
    """After commit, hand the event to the channel layer (live streams subscribe to group `events`)."""
    _publish_many([event])


def _publish_many(events: list[AuditEvent]) -> None:
    """One trip into the event loop for many events (a batch of 10,000 costs one async_to_sync)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None or not events:
        return

    async def send_all():
        for event in events:
            await layer.group_send("events", _message(event))

    try:
        async_to_sync(send_all)()
    except Exception:  # a live-stream hiccup must never undo or fail a committed change
        log.warning("Could not publish %d event(s) from %s", len(events), events[0].pk, exc_info=True)


def _message(event: AuditEvent) -> dict:
    return {
        "type": "event.message",
        "id": event.pk,
        "event_type": event.event_type,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "action": event.action,
        "metadata": event.metadata,
        "timestamp": event.timestamp.isoformat(),
    }
