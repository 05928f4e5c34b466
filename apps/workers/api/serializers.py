from rest_framework import serializers

from apps.workers.models import Worker


class CapacitySerializer(serializers.Serializer):
    cpu_cores = serializers.IntegerField(min_value=1)
    memory_gb = serializers.IntegerField(min_value=1)
    storage_gb = serializers.IntegerField(min_value=1)
    max_nodes = serializers.IntegerField(min_value=1)


class UsageSerializer(serializers.Serializer):
    cpu_percent = serializers.FloatField(allow_null=True, source="cpu_usage_percent")
    memory_percent = serializers.FloatField(allow_null=True, source="memory_usage_percent")
    nodes = serializers.IntegerField(source="nodes_running")


class WorkerSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    capacity = serializers.SerializerMethodField()
    usage = UsageSerializer(source="*", read_only=True)

    class Meta:
        model = Worker
        fields = [
            "id", "name", "status", "aws_instance_id", "aws_region", "ip_address", "private_ip_address",
            "instance_type", "cml_service_status", "license_status", "capacity", "usage", "draining",
            "last_ec2_sync_at", "last_cml_sync_at", "status_changed_at", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_capacity(self, worker) -> CapacitySerializer:
        return {f: getattr(worker, f) for f in ("cpu_cores", "memory_gb", "storage_gb", "max_nodes")}


class WorkerCreateSerializer(serializers.Serializer):
    """Import an existing EC2 instance (`aws_instance_id`) or launch a new worker (`name`)."""

    name = serializers.CharField(max_length=100, required=False, allow_blank=False)
    aws_instance_id = serializers.CharField(max_length=40, required=False)
    aws_region = serializers.CharField(max_length=30, required=False, default="us-west-2")
    instance_type = serializers.CharField(max_length=40, required=False, default="m5zn.metal")
    capacity = CapacitySerializer(required=False)

    def validate(self, attrs):
        if not attrs.get("aws_instance_id") and not attrs.get("name"):
            raise serializers.ValidationError(
                {"name": ["Send name (to launch a worker) or aws_instance_id (to import one)."]}
            )
        return attrs
