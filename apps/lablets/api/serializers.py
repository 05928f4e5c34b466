
from rest_framework import serializers

from apps.lablets.models import LabletDefinition, LabletInstance
from apps.lablets.services.definitions import validate_cml_yaml
from apps.core.errors import ValidationFailed


class ResourceRequirementsSerializer(serializers.Serializer):
    cpu_cores = serializers.IntegerField(min_value=1)
    memory_gb = serializers.IntegerField(min_value=1)
    storage_gb = serializers.IntegerField(min_value=1)
    node_count = serializers.IntegerField(min_value=1)


class LifecycleSerializer(serializers.Serializer):
    default_duration_minutes = serializers.IntegerField(min_value=1, required=False, default=120)
    max_duration_minutes = serializers.IntegerField(min_value=1, required=False)
    idle_timeout_minutes = serializers.IntegerField(min_value=1, required=False, default=30)
    keep_lab_until_slot_end = serializers.BooleanField(
        required=False, default=False,
        help_text="Keep an instance's lab until its slot ends, even once it is graded. Default false: a graded "
                  "instance is torn down at once (its archive kept) and the capacity it held is freed.")


class PortDefinitionSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    device_name = serializers.CharField(max_length=100)
    console_type = serializers.ChoiceField(choices=["serial", "vnc", "ssh", "telnet", "http", "https"])
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)


class LabletDefinitionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    resource_requirements = ResourceRequirementsSerializer(source="*", read_only=True)
    lifecycle = LifecycleSerializer(source="*", read_only=True)
    port_definitions = PortDefinitionSerializer(many=True, read_only=True)
    reference_worker_id = serializers.CharField(source="reference_worker.public_id", read_only=True,
                                                allow_null=True, default=None)
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True, default=None,
                                  help_text="The username of the definition's owner, who may change it (and "
                                            "admins); null: admins only.")

    class Meta:
        model = LabletDefinition
        fields = [
            "id", "name", "version", "description", "cml_lab_yaml", "content_hash", "resource_requirements",
            "lifecycle", "port_definitions", "is_active", "trusted", "direct_console_access", "warm_pool_depth",
            "reference_lab_id",
            "reference_worker_id",
            "synced_at", "owner", "created_at", "updated_at",
        ]
        read_only_fields = fields


class LabletDefinitionSyncSerializer(serializers.Serializer):
    lab_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                   help_text="The CML lab to pull from; default: the definition's reference lab.")
    worker_id = serializers.CharField(max_length=40, required=False, allow_blank=True, default="",
                                      help_text="The worker whose CML holds the lab; default: the reference lab's.")


class LabletDefinitionWriteSerializer(serializers.Serializer):
    """Body of POST (all of name, version, cml_lab_yaml, resource_requirements) and PUT (any subset)."""

    name = serializers.CharField(max_length=100)
    version = serializers.CharField(max_length=40)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    cml_lab_yaml = serializers.CharField(trim_whitespace=False)
    resource_requirements = ResourceRequirementsSerializer()
    lifecycle = LifecycleSerializer(required=False)
    port_definitions = PortDefinitionSerializer(many=True, required=False, default=list)
    is_active = serializers.BooleanField(required=False, default=True)
    trusted = serializers.BooleanField(
        required=False,
        help_text="Admins only (403 for anyone else who would change it): the topology may use external "
                  "connectors, which bridge the lab into the worker's networks. A change of the topology by "
                  "anyone but an admin clears it.")

    direct_console_access = serializers.BooleanField(
        required=False,
        help_text="Students may reach their instances' console ports directly: while an instance with a "
                  "student_cidr runs, its allocated ports are opened to that range in the worker's EC2 security "
                  "group (removed at teardown). Default false: consoles only through LabManager. Changed by "
                  "whoever may change the definition (its owner, admins).")

    warm_pool_depth = serializers.IntegerField(
        required=False, min_value=0, max_value=100,
        help_text="Labs of this definition kept imported and booted ahead on suitable workers (held in the capacity "
                  "ledger): an instance whose timeslot has begun when it is created takes one and is running "
                  "within seconds. The pool refills in the background, shrinks to zero when no instance started "
                  "for WARM_POOL_IDLE_HOURS. Default 0: none (docs/workers.md#warm-pools).")

    def validate_cml_lab_yaml(self, value):
        # The syntax only, reported with the other field errors; the service checks the topology policy.
        try:
            validate_cml_yaml(value)
        except ValidationFailed as exc:
            raise serializers.ValidationError(exc.errors["cml_lab_yaml"])
        return value


class LabletInstanceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    definition_id = serializers.CharField(source="definition.public_id", read_only=True)
    definition_name = serializers.CharField(source="definition.name", read_only=True)
    definition_version = serializers.CharField(source="definition.version", read_only=True)
    worker_id = serializers.CharField(source="worker.public_id", read_only=True, allow_null=True, default=None)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = LabletInstance
        fields = [
            "id", "definition_id", "definition_name", "definition_version", "status", "owner_id", "created_by",
            "timeslot_start", "timeslot_end", "reservation_id", "worker_id", "cml_lab_id", "priority",
            "scheduled_at", "instantiating_at", "running_at", "collecting_at", "grading_at", "stopping_at",
            "stopped_at", "archived_at", "terminated_at", "artifacts", "grading_result", "termination_reason",
            "lifecycle_step", "console", "student_cidr", "console_access", "archive_key", "last_error",
            "created_at", "updated_at",
        ]
        read_only_fields = fields

    # A list page is built from `.values()` rows (apps.lablets.selectors.lablet_instance_rows), not model
    # instances, with the timestamps already as text (`iso_<name>`, written by the database): four times
    # less Python per row. `represent_row` gives exactly what DRF gives for the
    # model instance (tests/lablets/test_serializers.py).
    STAMPS = ("scheduled_at", "instantiating_at", "running_at", "collecting_at", "grading_at", "stopping_at",
              "stopped_at", "archived_at", "terminated_at")

    @classmethod
    def represent_row(cls, row: dict) -> dict:
        data = {
            "id": row["public_id"],
            "definition_id": row["definition__public_id"],
            "definition_name": row["definition__name"],
            "definition_version": row["definition__version"],
            "status": row["status"],
            "owner_id": row["owner_id"],
            "created_by": row["created_by__username"],
            "timeslot_start": row["iso_timeslot_start"],
            "timeslot_end": row["iso_timeslot_end"],
            "reservation_id": row["reservation_id"],
            "worker_id": row["worker__public_id"],
            "cml_lab_id": row["cml_lab_id"],
            "priority": row["priority"],
        }
        for stamp in cls.STAMPS:
            data[stamp] = row[f"iso_{stamp}"]
        data["artifacts"] = row["artifacts"]
        data["grading_result"] = row["grading_result"]
        for name in ("termination_reason", "lifecycle_step", "console", "student_cidr", "console_access",
                     "archive_key", "last_error"):
            data[name] = row[name]
        data["created_at"] = row["iso_created_at"]
        data["updated_at"] = row["iso_updated_at"]
        return data


class LabletInstanceCreateSerializer(serializers.Serializer):
    definition_id = serializers.CharField(max_length=40)
    owner_id = serializers.CharField(max_length=150)
    timeslot_start = serializers.DateTimeField()
    timeslot_end = serializers.DateTimeField(required=False, help_text="Default: start + the definition's default duration.")
    reservation_id = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    priority = serializers.IntegerField(min_value=1, max_value=10, required=False, default=5)
    student_cidr = serializers.CharField(
        max_length=50, required=False, allow_blank=True, default="",
        help_text="The student's address range (IPv4/IPv6 CIDR, a bare address is a /32 or /128); 422 for "
                  "anything else and for /0. Used only when the definition has direct_console_access.")
    reserve = serializers.BooleanField(
        required=False, default=True,
        help_text="When no worker has room for the whole timeslot: true keeps the instance PENDING as a "
                  "reservation, placed as soon as capacity frees; false answers 409 and books nothing.",
    )


class LabletInstanceExtendSerializer(serializers.Serializer):
    minutes = serializers.IntegerField(min_value=1, required=False, help_text="Minutes to add to timeslot_end.")
    timeslot_end = serializers.DateTimeField(required=False, help_text="The new end of the timeslot.")

    def validate(self, attrs):
        if ("minutes" in attrs) == ("timeslot_end" in attrs):
            raise serializers.ValidationError({"minutes": ["Send exactly one of minutes or timeslot_end."]})
        return attrs


class GradingResultSerializer(serializers.Serializer):
    score = serializers.FloatField(min_value=0)
    max_score = serializers.FloatField(min_value=0)
    details = serializers.JSONField(required=False, default=None, help_text="Anything the grader wants to keep.")
