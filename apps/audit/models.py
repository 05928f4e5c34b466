"""The audit journal: one append-only, keyed-hash-chained row per change (docs/audit.md)."""

from django.db import models
from django.utils import timezone

from apps.core.indexes import PostgresBrinIndex


class AppendOnlyError(Exception):
    """The journal is append-only: rows are never changed or deleted through the application."""


class AuditEventQuerySet(models.QuerySet):
    """`AuditEvent.objects` refuses bulk changes. (The test database flush and the tamper tests work
    with SQL, below the ORM; migrations use their own plain manager.)"""

    def update(self, **kwargs):
        raise AppendOnlyError("The audit journal is append-only: rows cannot be updated.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("The audit journal is append-only: rows cannot be updated.")

    def delete(self):
        raise AppendOnlyError("The audit journal is append-only: rows cannot be deleted.")

    delete.queryset_only = True  # as QuerySet.delete: no AuditEvent.objects.delete()


class AuditEvent(models.Model):
    # The chain (apps/audit/chain.py): filled once, by audit_seal() right after the row's transaction commits.
    sequence_num = models.PositiveBigIntegerField(
        null=True, blank=True, unique=True,
        help_text="Position in the chain: 1, 2, 3, ... without gaps (null until sealed, a moment after commit)",
    )
    prev_hash = models.CharField(max_length=64, blank=True, help_text="event_hash of the previous event (64 zeros for the first)")
    event_hash = models.CharField(
        max_length=64, blank=True,
        help_text="HMAC-SHA256 of the canonical serialisation, keyed by chain_key_id's key (apps/audit/chain.py)",
    )
    chain_key_id = models.CharField(
        max_length=16, blank=True, default="", db_default="",  # a database default: rows inserted with SQL
        help_text="Id of the key that sealed the event (empty: plain SHA-256, sealed before the chain was keyed)",
    )
    timestamp = models.DateTimeField(default=timezone.now)  # audit_timestamp_idx
    # Indexes: Meta (plain b-trees; `db_index` on a CharField would add a second, varchar_pattern_ops copy
    # on PostgreSQL that no query uses, and every insert pays for each index: docs/performance.md).
    event_type = models.CharField(max_length=100, help_text="<entity>.<past_tense>")
    actor = models.CharField(max_length=150, help_text="username, username (apikey:<prefix>), or system")
    user_id = models.CharField(
        max_length=150, null=True, blank=True,
        help_text="username of the acting user (null for system jobs and anonymous callers)",
    )
    api_key_prefix = models.CharField(max_length=32, blank=True, help_text="prefix of the API key used, if any")
    resource_type = models.CharField(max_length=50)
    resource_id = models.CharField(max_length=64)  # looked up with resource_type: audit_resource_idx
    action = models.CharField(max_length=100)
    success = models.BooleanField(default=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="before/after and details")

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]  # the order of writing; the chain's order (sequence_num) follows it
        indexes = [
            models.Index(fields=["resource_type", "resource_id"], name="audit_resource_idx"),
            # Rows are written in time order: a BRIN index on PostgreSQL serves the time filters for a
            # fraction of a b-tree's upkeep on every append and seal.
            PostgresBrinIndex(fields=["timestamp"], name="audit_timestamp_idx"),
            models.Index(fields=["event_type"], name="audit_event_type_idx"),
            models.Index(fields=["user_id"], name="audit_user_idx"),
            # What audit_seal() looks for: rows committed but not chained yet (normally none or a few).
            models.Index(fields=["id"], condition=models.Q(sequence_num__isnull=True), name="audit_unsealed_idx"),
        ]

    def __str__(self):
        return f"#{self.sequence_num} {self.event_type} {self.resource_id} by {self.actor}"

    @property
    def resource(self) -> str:
        return f"{self.resource_type}:{self.resource_id}"

    @property
    def sealed(self) -> bool:
        return self.sequence_num is not None

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("The audit journal is append-only: rows cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The audit journal is append-only: rows cannot be deleted.")
