from rest_framework import serializers

from apps.workers.models import Worker, WorkerTemplate


class CapacitySerializer(serializers.Serializer):
    cpu_cores = serializers.IntegerField(min_value=1)
    memory_gb = serializers.IntegerField(min_value=1)
    storage_gb = serializers.IntegerField(min_value=1)
    max_nodes = serializers.IntegerField(min_value=1)


class PartialCapacitySerializer(CapacitySerializer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class UsageSerializer(serializers.Serializer):
    cpu_percent = serializers.FloatField(allow_null=True, source="cpu_usage_percent")
    memory_percent = serializers.FloatField(allow_null=True, source="memory_usage_percent")
    memory_used_gb = serializers.FloatField(allow_null=True)
    memory_total_gb = serializers.FloatField(allow_null=True)
    nodes = serializers.IntegerField(source="nodes_running")


class CmlSerializer(serializers.Serializer):
    version = serializers.CharField(source="cml_version")
    license_tier = serializers.CharField()
    health = serializers.JSONField(source="cml_health")
    error = serializers.CharField(source="cml_error")


class WorkerSerializer(serializers.ModelSerializer):
    """A worker as the API shows it. CML credentials are never part of it."""

    id = serializers.CharField(source="public_id", read_only=True)
    template_id = serializers.CharField(source="template.public_id", read_only=True, allow_null=True, default=None)
    capacity = serializers.SerializerMethodField()
    usage = UsageSerializer(source="*", read_only=True)
    cml = CmlSerializer(source="*", read_only=True)
    placeable = serializers.BooleanField(source="is_placeable", read_only=True)

    class Meta:
        model = Worker
        fields = [
            "id", "name", "status", "aws_instance_id", "aws_region", "ip_address", "private_ip_address",
            "instance_type", "template_id", "cml_service_status", "license_status", "cml", "capacity", "usage",
            "draining", "placeable", "session_pool", "last_ec2_sync_at", "last_cml_sync_at", "status_changed_at",
            "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_capacity(self, worker) -> CapacitySerializer:
        return {f: getattr(worker, f) for f in ("cpu_cores", "memory_gb", "storage_gb", "max_nodes")}


class WorkerCreateSerializer(serializers.Serializer):
    """Import an existing EC2 instance (`aws_instance_id`) or launch a new worker (`name`)."""

    name = serializers.CharField(max_length=100, required=False, allow_blank=False)
    aws_instance_id = serializers.CharField(max_length=40, required=False)
    aws_region = serializers.CharField(max_length=30, required=False, default="")
    instance_type = serializers.CharField(max_length=40, required=False, default="")
    template_id = serializers.CharField(max_length=40, required=False, help_text="Launch from this worker template.")
    capacity = CapacitySerializer(required=False)

    def validate(self, attrs):
        if not attrs.get("aws_instance_id") and not attrs.get("name"):
            raise serializers.ValidationError(
                {"name": ["Send name (to launch a worker) or aws_instance_id (to import one)."]}
            )
        template_id = attrs.pop("template_id", None)
        if template_id:
            template = WorkerTemplate.objects.filter(public_id=template_id).first()
            if template is None:
                raise serializers.ValidationError({"template_id": ["Unknown worker template."]})
            attrs["template"] = template
        return attrs


class WorkerUpdateSerializer(serializers.Serializer):
    capacity = PartialCapacitySerializer()


class WorkerLicenseSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=400, write_only=True, help_text="A Smart Licensing token.")
    reregister = serializers.BooleanField(required=False, default=False)


class WorkerTemplateSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    cost_per_hour = serializers.DecimalField(max_digits=8, decimal_places=4, min_value=0, required=False)
    cpu_cores = serializers.IntegerField(min_value=1)
    memory_gb = serializers.IntegerField(min_value=1)
    storage_gb = serializers.IntegerField(min_value=1)
    max_nodes = serializers.IntegerField(min_value=1)
    scalable = serializers.BooleanField(required=False, help_text=(
        "The fleet planner may launch workers of this template for demand and terminate them when unneeded."))
    availability_zones = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=20,
        help_text="Availability zones to launch in, tried in order when EC2 has no capacity in one.")
    subnet_ids = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=20,
        help_text="Subnets to launch in, tried in order; when given they are used instead of availability_zones.")
    fallback_instance_types = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, max_length=10,
        help_text="Instance types tried in order when EC2 has no capacity for instance_type "
                  "(each at least the template's capacity).")
    min_workers = serializers.IntegerField(min_value=0, required=False,
                                           help_text="The planner keeps at least this many live workers of the template "
                                                     "(launches the missing ones, never terminates below).")
    max_workers = serializers.IntegerField(min_value=0, required=False, allow_null=True,
                                           help_text="At most this many live workers; null: no own limit.")
    max_cost_per_day = serializers.DecimalField(
        max_digits=10, decimal_places=2, min_value=0, required=False, allow_null=True,
        help_text="At most this cost per day (cost_per_hour × 24 of its live workers); null: no own limit.")
    boot_seconds = serializers.FloatField(read_only=True, allow_null=True, help_text=(
        "Measured launch/start → CML available (moving average); null until measured "
        "(the planner then assumes WORKER_BOOT_MINUTES)."))

    class Meta:
        model = WorkerTemplate
        fields = [
            "id", "name", "instance_type", "ami_id", "launch_template_id", "aws_region", "cpu_cores", "memory_gb",
            "storage_gb", "max_nodes", "license_tier", "cost_per_hour", "scalable", "availability_zones",
            "subnet_ids", "fallback_instance_types", "min_workers", "max_workers", "max_cost_per_day",
            "boot_seconds", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "boot_seconds", "created_at", "updated_at"]
        validators = []  # name uniqueness is the service's 409, not a 422
        extra_kwargs = {"name": {"validators": []}}
