from rest_framework import serializers

from apps.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    """One journal event, as in the seed's AuditEvent: `resource` is `type:id`."""

    resource = serializers.CharField(read_only=True, help_text="Resource acted upon, `type:id`")
    user_id = serializers.CharField(read_only=True, allow_null=True,
                                    help_text="Username of the acting user (null for system jobs)")
    metadata = serializers.DictField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "sequence_num", "timestamp", "event_type", "actor", "user_id", "api_key_prefix", "resource",
            "resource_type", "resource_id", "action", "success", "ip_address", "error", "trace_id", "metadata",
            "prev_hash", "event_hash", "chain_key_id",
        ]
        read_only_fields = fields


class AuditListParamsSerializer(serializers.Serializer):
    """The filters of GET /api/audit/events (limit/offset/sort/order are the shared list parameters)."""

    # `from` is a Python keyword: declared in __init__.
    to = serializers.DateTimeField(required=False)
    user_id = serializers.CharField(required=False, max_length=150)
    resource = serializers.CharField(required=False, max_length=120)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from"] = serializers.DateTimeField(required=False)


class VerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    total_events = serializers.IntegerField()
    first_tampered = serializers.IntegerField(
        allow_null=True, help_text="First sequence number where the chain breaks (a deleted event: its number)")
    chain_root_hash = serializers.CharField(allow_null=True, help_text="event_hash of the last event verified")
    verified_at = serializers.DateTimeField()
    reason = serializers.CharField(help_text="What is wrong at first_tampered (empty when valid)")
    keyed_from = serializers.IntegerField(
        allow_null=True, help_text="First event sealed with a key (events before it: plain SHA-256, from before the "
                                   "chain was keyed); null when none was")
    anchors_checked = serializers.IntegerField(help_text="Anchors outside the database the journal was held against")


class LastAnchorSerializer(serializers.Serializer):
    sequence_num = serializers.IntegerField(help_text="The event anchored (the head of the chain then)")
    event_hash = serializers.CharField()
    anchored_at = serializers.DateTimeField()
    locations = serializers.ListField(child=serializers.CharField(), help_text="Files and s3:// objects written")


class ChainRootSerializer(serializers.Serializer):
    root_hash = serializers.CharField(allow_null=True, help_text="event_hash of the last event (null: empty journal)")
    timestamp = serializers.DateTimeField(allow_null=True)
    total_events = serializers.IntegerField()
    last_anchor = LastAnchorSerializer(
        allow_null=True, help_text="The last anchor written outside the database, as journalled (`audit.anchored`); "
                                   "null when none was")
