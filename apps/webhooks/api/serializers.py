from rest_framework import serializers

from apps.webhooks.models import WebhookDeliveryAttempt, WebhookSubscription


class WebhookSerializer(serializers.ModelSerializer):
    """A subscription as the API shows it: the secret is never part of it (only of the create response)."""

    id = serializers.CharField(source="public_id", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = ["id", "url", "description", "event_types", "active", "created_by", "consecutive_failures",
                  "total_failures", "total_deliveries", "last_success_at", "last_failure_at", "disabled_at",
                  "disabled_reason", "last_sequence_num", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    """The create response: the only time the secret is shown."""

    secret = serializers.CharField(read_only=True, help_text="Shown once, now; keep it to verify signatures.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    event_types = serializers.ListField(child=serializers.CharField(max_length=120), required=False, default=list,
                                        help_text="CloudEvents types or patterns (io.lablet.instance.*); empty: all")
    secret = serializers.CharField(required=False, allow_blank=True, write_only=True, max_length=200,
                                   help_text="HMAC key (16+ characters); generated when omitted")
    description = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    active = serializers.BooleanField(required=False, default=True)


class WebhookUpdateSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000, required=False)
    event_types = serializers.ListField(child=serializers.CharField(max_length=120), required=False)
    secret = serializers.CharField(required=False, write_only=True, max_length=200, help_text="Rotate the secret")
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)
    active = serializers.BooleanField(required=False)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One attempt of the delivery log."""

    id = serializers.IntegerField(read_only=True)

    class Meta:
        model = WebhookDeliveryAttempt
        fields = ["id", "event_id", "event_type", "attempt", "success", "status_code", "response_excerpt", "error",
                  "duration_ms", "delivered_at", "next_attempt_at"]
        read_only_fields = fields
