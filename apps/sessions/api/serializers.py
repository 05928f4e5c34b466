"""Bodies of /api/remote-lab: field names and order as in the seed's DTOs, extra fields after them."""

from rest_framework import serializers

from apps.sessions.models import SessionStatus


class CreateSessionResponseSerializer(serializers.Serializer):
    session_id = serializers.UUIDField(source="pk")
    position = serializers.IntegerField(help_text="0: active at once; else the place in the queue.")


class SessionStatusResponseSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[SessionStatus.WAITING, SessionStatus.ACTIVE])
    position = serializers.IntegerField(help_text="0: active; 1..n: sessions ahead plus one.")
    estimated_wait_seconds = serializers.IntegerField(allow_null=True, help_text=(
        "Rough time until active, from recent session durations (null until the pool has history)."))
    pool = serializers.CharField(source="pool.name")
    worker = serializers.CharField(source="worker.public_id", allow_null=True, default=None,
                                   help_text="The worker an active session holds.")
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


class ActiveSessionResponseSerializer(serializers.Serializer):
    session_id = serializers.UUIDField(source="pk")
    status = serializers.CharField()
    position = serializers.IntegerField()
    pool = serializers.CharField(source="pool.name")
    worker = serializers.CharField(source="worker.public_id", allow_null=True, default=None)


class DeviceInfoSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The node's label.")
    raw = serializers.DictField(help_text="The full node record (CML node: id, label, node_definition, state, "
                                          "console_key, console_path, lab_id, worker_id, host).")


class AcquireRequestSerializer(serializers.Serializer):
    topology = serializers.FileField(help_text="CML lab YAML; the file name must end in .yml or .yaml.")
    reuse = serializers.BooleanField(default=True, help_text="Attach to the running lab of the same content.")
    extra_files = serializers.ListField(child=serializers.FileField(allow_empty_file=True), required=False, default=list,
                                        help_text="Supporting files, stored beside the topology.")


class AcquireResponseSerializer(serializers.Serializer):
    reused = serializers.BooleanField()
    devices = DeviceInfoSerializer(many=True)


class LabStatusSerializer(serializers.Serializer):
    status = serializers.CharField()
    worker = serializers.CharField(source="worker.public_id")
    topology_sha256 = serializers.CharField()
    topology_name = serializers.CharField()
    cml_lab_id = serializers.CharField()
    ref_count = serializers.IntegerField()
    devices = DeviceInfoSerializer(many=True)
    started_at = serializers.DateTimeField(allow_null=True)


class DestroyLabQuerySerializer(serializers.Serializer):
    force = serializers.BooleanField(default=True)


class CreateSessionQuerySerializer(serializers.Serializer):
    pool = serializers.CharField(required=False, max_length=50, allow_blank=True)


class PoolHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    waiting = serializers.IntegerField()
    active = serializers.IntegerField()
    usable_workers = serializers.IntegerField()
    avg_session_seconds = serializers.FloatField(allow_null=True)


class DebugHealthSerializer(serializers.Serializer):
    status = serializers.CharField()
    timestamp = serializers.FloatField()
    uptime = serializers.FloatField()
    sessions = serializers.IntegerField()
    queue_length = serializers.IntegerField()
    shutting_down = serializers.BooleanField()
    pools = PoolHealthSerializer(many=True)
