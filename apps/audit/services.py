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


def _publish(event: AuditEvent) -> None:
    """After commit, hand the event to the channel layer (live streams subscribe to group `events`)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    message = {
        "type": "event.message",
        "id": event.pk,
        "event_type": event.event_type,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "action": event.action,
        "metadata": event.metadata,
        "timestamp": event.timestamp.isoformat(),
    }
    try:
        async_to_sync(layer.group_send)("events", message)
    except Exception:  # a live-stream hiccup must never undo or fail a committed change
        log.warning("Could not publish event %s", event.pk, exc_info=True)
