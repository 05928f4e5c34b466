"""Bodies of the scheduler endpoints: roster bookings, the preview (dry run), the status, priorities.

The output serializers document what the services return (drf-spectacular renders them); the
preview and the status are rendered through them, the roster results by the view.
"""

from django.conf import settings
from rest_framework import serializers

from apps.lablets.api.serializers import LabletInstanceSerializer
from apps.api.schema import ProblemSerializer

PRIORITY_HELP = "1 (lowest) to 10 (highest); waiting instances gain a point per SCHEDULER_AGING_MINUTES."


class LabletInstanceBulkCreateSerializer(serializers.Serializer):
    definition_id = serializers.CharField(max_length=40)
    owner_ids = serializers.ListField(
        child=serializers.CharField(max_length=150), allow_empty=False,
        help_text="The roster: one instance per owner, in this order (at most BULK_MAX_OWNERS, default 500).",
    )
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField(required=False, help_text="Default: start + the definition's default duration.")
    reservation_id = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    priority = serializers.IntegerField(min_value=1, max_value=10, required=False, default=5, help_text=PRIORITY_HELP)
    reserve = serializers.BooleanField(
        required=False, default=True,
        help_text="false: an owner for whom no worker has room fails (409) instead of getting a PENDING reservation.",
    )
    all_or_nothing = serializers.BooleanField(
        required=False, default=False,
        help_text="true: one transaction; if any owner fails nothing is booked and the answer is 409 with the results.",
    )

    include_links = serializers.BooleanField(
        required=False, default=False,
        help_text="true: each booked owner's result carries `student_link` (a new link: its URL is in this answer "
                  "only; a replay with the same Idempotency-Key makes new links, the first ones stop working).",
    )

    def validate_owner_ids(self, value):
        limit = settings.BULK_MAX_OWNERS
        if len(value) > limit:
            raise serializers.ValidationError(f"At most {limit} owners per request ({len(value)} sent).")
        return value


class BulkErrorSerializer(serializers.Serializer):
    status = serializers.IntegerField()
    title = serializers.CharField()
    detail = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Field errors (422). Other extension members of the problem come along too, e.g. `limit` and "
                  "`quota` for a quota, `reason` for no capacity, `conflicting_instance_id` for an overlap.",
    )


class StudentLinkBriefSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="The student's URL: in this answer only.")
    expires_at = serializers.DateTimeField()


class BulkResultSerializer(serializers.Serializer):
    owner_id = serializers.CharField()
    ok = serializers.BooleanField()
    instance = LabletInstanceSerializer(allow_null=True, help_text="The instance booked (scheduled or pending), or null.")
    error = BulkErrorSerializer(allow_null=True, help_text="Why this owner was not booked, or null.")
    student_link = StudentLinkBriefSerializer(
        required=False, allow_null=True, help_text="With include_links: the owner's student link (null if not booked).")


class BulkTotalsSerializer(serializers.Serializer):
    requested = serializers.IntegerField()
    created = serializers.IntegerField()
    scheduled = serializers.IntegerField(help_text="Created and placed on a worker.")
    pending = serializers.IntegerField(help_text="Created as a pending reservation (no room yet).")
    failed = serializers.IntegerField()


class LabletInstanceBulkResultSerializer(serializers.Serializer):
    definition_id = serializers.CharField()
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField()
    all_or_nothing = serializers.BooleanField()
    totals = BulkTotalsSerializer()
    results = BulkResultSerializer(many=True)


class BulkProblemSerializer(ProblemSerializer):
    """409 of an all_or_nothing roster: nothing was booked; every owner's fate is in `results`."""

    totals = BulkTotalsSerializer()
    results = BulkResultSerializer(many=True)


class SchedulerPreviewRequestSerializer(serializers.Serializer):
    definition_id = serializers.CharField(max_length=40)
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField(required=False, help_text="Default: start + the definition's default duration.")
    count = serializers.IntegerField(min_value=1, max_value=500, required=False, default=1,
                                     help_text="How many instances to place (1 to 500).")


class UtilisationSerializer(serializers.Serializer):
    """Percent of capacity in use at the busiest moment of the timeslot (null: no such capacity)."""

    cpu_cores = serializers.FloatField(allow_null=True)
    memory_gb = serializers.FloatField(allow_null=True)
    storage_gb = serializers.FloatField(allow_null=True)
    node_count = serializers.FloatField(allow_null=True)


REJECTION_HELP = (
    "failed | draining | unhealthy (CML not available) | stopped (not startable, or stopped workers are not "
    "used) | licence (bad licence, or a personal licence's one live instance) | capacity (the dimension is "
    "in the detail) | ports (console ports) | not_chosen (fits, but the policy preferred other workers)."
)


class RejectionSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text=REJECTION_HELP)
    detail = serializers.CharField()


class PreviewPlacementSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    worker_id = serializers.CharField(allow_null=True, help_text="null: no worker has room for this one.")
    starts_worker = serializers.BooleanField(required=False, help_text="The worker is stopped and would be started.")
    reason = serializers.CharField(required=False, help_text="Why it has no worker.")


class PreviewWorkerSerializer(serializers.Serializer):
    worker_id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    draining = serializers.BooleanField()
    placed = serializers.IntegerField(help_text="How many of the instances would land here.")
    utilisation_before = UtilisationSerializer(allow_null=True, help_text="null when the worker is ruled out by its state.")
    utilisation_after = UtilisationSerializer()
    rejected = RejectionSerializer(allow_null=True, help_text="Why this worker takes none of them, or null.")
    full_after = RejectionSerializer(required=False, help_text="The worker took some and is then full: why.")


class SchedulerPreviewSerializer(serializers.Serializer):
    definition_id = serializers.CharField()
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField()
    count = serializers.IntegerField()
    placeable = serializers.IntegerField()
    unplaceable = serializers.IntegerField()
    policy = serializers.CharField(help_text="best_fit | spread (SCHEDULER_POLICY).")
    placements = PreviewPlacementSerializer(many=True)
    workers = PreviewWorkerSerializer(many=True)


class SchedulerStatusSerializer(serializers.Serializer):
    policy = serializers.CharField()
    workers_total = serializers.IntegerField(help_text="Workers not terminated.")
    workers_usable = serializers.IntegerField(help_text="Running, not draining, CML available.")
    workers_draining = serializers.IntegerField()
    workers_stopped = serializers.IntegerField()
    queue_depth = serializers.IntegerField(help_text="PENDING instances.")
    pending_reservations = serializers.IntegerField(help_text="PENDING instances whose slot has not ended.")
    oldest_pending_since = serializers.DateTimeField(allow_null=True)
    scheduled = serializers.IntegerField()
    live = serializers.IntegerField()
    placements_last_24h = serializers.IntegerField()
    completed_today = serializers.IntegerField(
        help_text="Instances terminated since midnight (TIME_ZONE, UTC) other than by a failure.")
    failed_today = serializers.IntegerField(
        help_text="Instances terminated since midnight (TIME_ZONE, UTC) because they failed "
                  "(termination_reason `failed: ...`).")
    generated_at = serializers.DateTimeField()


class LabletInstancePrioritySerializer(serializers.Serializer):
    priority = serializers.IntegerField(min_value=1, max_value=10, help_text=PRIORITY_HELP)
