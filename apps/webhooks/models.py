"""Webhook subscriptions, one delivery per (subscription, journal event), and the log of every attempt.

See docs/webhooks.md. A subscription's `last_sequence_num` is its cursor in the audit chain: every sealed
event up to it has been turned into a delivery row (or skipped by the filter), exactly once.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core.ids import public_id


def subscription_id() -> str:
    return public_id("whk")


class WebhookSubscription(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=subscription_id, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(
        default=list, blank=True,
        help_text="CloudEvents types or patterns (io.lablet.instance.*); empty: every event",
    )
    secret = models.CharField(max_length=200, help_text="HMAC-SHA256 key; never returned by the API after creation")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    last_sequence_num = models.PositiveBigIntegerField(
        default=0, help_text="Cursor: journal events up to this sequence_num are enqueued (or filtered out)")
    consecutive_failures = models.PositiveIntegerField(default=0, help_text="Failed deliveries in a row")
    total_failures = models.PositiveIntegerField(default=0)
    total_deliveries = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["active", "last_sequence_num"], name="webhook_active_cursor")]

    def __str__(self):
        return f"{self.public_id} → {self.host}"  # not the URL: its path or query often carries a token

    @property
    def host(self) -> str:
        """The URL's host (and port), what the journal and the admin's log name: never the path or query."""
        return urlsplit(self.url).netloc.rpartition("@")[2]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its (next) attempt at next_attempt_at
    SENDING = "sending"  # an attempt holds it until next_attempt_at (a lease)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts exhausted, or refused with a 4xx
    SKIPPED = "skipped"  # the subscription was disabled or deleted before it went out


class WebhookDelivery(models.Model):
    """One journal event for one subscription; `payload` is the CloudEvent JSON, signed anew per attempt."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    sequence_num = models.PositiveBigIntegerField(help_text="The journal event's sequence_num")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=120)
    payload = models.TextField(help_text="The CloudEvent, structured JSON, exactly as POSTed")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "sequence_num"], name="webhook_delivery_once"),
            models.CheckConstraint(condition=models.Q(status__in=DeliveryStatus.values), name="webhook_delivery_status_valid"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self):
        return f"{self.event_type} #{self.sequence_num} → {self.subscription_id} ({self.status})"


class WebhookDeliveryAttempt(models.Model):
    """The delivery log: one row per HTTP attempt (GET /api/webhooks/{id}/deliveries)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="attempt_log")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=120)
    attempt = models.PositiveIntegerField()
    success = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(default=timezone.now, db_index=True, help_text="When the attempt was made")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When it is retried (null: not retried)")

    class Meta:
        indexes = [
            models.Index(fields=["subscription", "delivered_at"], name="webhook_attempt_sub"),
            models.Index(fields=["success"], name="webhook_attempt_success"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.event_id} attempt {self.attempt}: {self.status_code or self.error}"
