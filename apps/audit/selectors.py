"""Reads of the journal: the filtered event list and the root of the chain."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from apps.audit.models import AuditEvent


def audit_event_list(*, filters: dict) -> QuerySet[AuditEvent]:
    """Sealed events, filtered by `from`/`to` (datetimes, inclusive), `event_type` (list), `user_id`,
    `resource` (`type:id` or `type`)."""
    events = AuditEvent.objects.filter(sequence_num__isnull=False)
    if filters.get("from"):
        events = events.filter(timestamp__gte=filters["from"])
    if filters.get("to"):
        events = events.filter(timestamp__lte=filters["to"])
    if filters.get("event_type"):
        events = events.filter(event_type__in=filters["event_type"])
    if filters.get("user_id"):
        events = events.filter(user_id=filters["user_id"])
    if filters.get("resource"):
        resource_type, _, resource_id = filters["resource"].partition(":")
        events = events.filter(resource_type=resource_type)
        if resource_id:
            events = events.filter(resource_id=resource_id)
    return events


@dataclass(frozen=True)
class ChainRoot:
    root_hash: str | None
    timestamp: datetime | None
    total_events: int
    last_anchor: dict | None = None


def audit_chain_root() -> ChainRoot:
    """The hash of the last sealed event (it commits to every event before it), its time, the length of
    the chain (sequence numbers have no gaps: the last one is the count), and the last anchor written
    outside the database as its `audit.anchored` event tells (the anchors themselves: verification)."""
    head = (
        AuditEvent.objects.filter(sequence_num__isnull=False)
        .order_by("-sequence_num")
        .values_list("event_hash", "timestamp", "sequence_num")
        .first()
    )
    if head is None:
        return ChainRoot(root_hash=None, timestamp=None, total_events=0)
    anchored = (
        AuditEvent.objects.filter(event_type="audit.anchored", success=True, sequence_num__isnull=False)
        .order_by("-sequence_num").values_list("metadata", flat=True).first()
    )
    last_anchor = None
    if anchored:
        last_anchor = {name: anchored.get(name) for name in ("sequence_num", "event_hash", "anchored_at", "locations")}
    return ChainRoot(root_hash=head[0], timestamp=head[1], total_events=head[2], last_anchor=last_anchor)
