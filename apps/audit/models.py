"""The audit journal: one append-only row per change (hash chain comes with the audit issue)."""

from django.db import models


class AuditEvent(models.Model):
    timestamp = models.DateTimeField(auto_now_add=True, db_index=True)
    event_type = models.CharField(max_length=100, db_index=True, help_text="<entity>.<past_tense>")
    actor = models.CharField(max_length=150, help_text="username, apikey:<prefix> or system")
    resource_type = models.CharField(max_length=50)
    resource_id = models.CharField(max_length=64, db_index=True)
    action = models.CharField(max_length=100)
    success = models.BooleanField(default=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=64, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="before/after and details")

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"#{self.pk} {self.event_type} {self.resource_id} by {self.actor}"
