"""Workers: EC2 instances running Cisco Modeling Labs."""

from django.db import models

from apps.core.ids import public_id, worker_id


def template_id() -> str:
    return public_id("wtpl")


class WorkerTemplate(models.Model):
    """How new workers are launched: instance type, AMI or launch template, region, declared capacity."""

    public_id = models.CharField(max_length=40, unique=True, default=template_id, editable=False)
    name = models.CharField(max_length=100, unique=True)
    instance_type = models.CharField(max_length=40)
    ami_id = models.CharField(max_length=40, blank=True, help_text="Blank: settings.WORKER_AMI_ID")
    launch_template_id = models.CharField(max_length=60, blank=True)
    aws_region = models.CharField(max_length=30, default="us-west-2")
    cpu_cores = models.PositiveIntegerField()
    memory_gb = models.PositiveIntegerField()
    storage_gb = models.PositiveIntegerField()
    max_nodes = models.PositiveIntegerField()
    license_tier = models.CharField(max_length=40, default="enterprise")
    cost_per_hour = models.DecimalField(max_digits=8, decimal_places=4, default=0)
    # The elastic fleet (apps.fleet.planner, docs/workers.md#the-planner): a scalable template is what the
    # planner launches workers from when the demand exceeds the fleet, and terminates them again.
    scalable = models.BooleanField(default=False, help_text="The fleet planner may launch and terminate "
                                                            "workers of this template.")
    availability_zones = models.JSONField(default=list, blank=True, help_text=(
        "Availability zones to launch in, tried in order when EC2 has no capacity in one (Placement)."))
    subnet_ids = models.JSONField(default=list, blank=True, help_text=(
        "Subnets to launch in, tried in order (each implies its zone); when set, they are used instead of "
        "availability_zones. Blank: settings.WORKER_SUBNET_ID."))
    fallback_instance_types = models.JSONField(default=list, blank=True, help_text=(
        "Instance types tried, in order, when EC2 has no capacity for instance_type in any zone; each must "
        "offer at least the template's capacity (the worker declares the template's)."))
    min_workers = models.PositiveIntegerField(default=0, help_text=(
        "The planner keeps at least this many live workers of the template: it launches the missing ones and "
        "never terminates below."))
    max_workers = models.PositiveIntegerField(null=True, blank=True, help_text=(
        "At most this many live workers of the template; blank: only the fleet's limit (FLEET_MAX_WORKERS)."))
    max_cost_per_day = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True, help_text=(
        "At most this cost per day (cost_per_hour × 24 of its live workers); blank: no own limit."))
    # Measured by the CML health poll: launch or start → CML available, a moving average (until the first
    # measurement, settings.WORKER_BOOT_MINUTES).
    boot_seconds = models.FloatField(null=True, blank=True, editable=False)
    boot_samples = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    @property
    def instance_types(self) -> list[str]:
        """The instance type, then its fallbacks, without repeats."""
        return list(dict.fromkeys([self.instance_type, *(self.fallback_instance_types or [])]))

    def __str__(self):
        return f"{self.name} ({self.instance_type})"


class WorkerStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    FAILED = "failed"


class Worker(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=worker_id, editable=False)
    name = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=WorkerStatus.choices, default=WorkerStatus.PENDING, db_index=True)
    aws_instance_id = models.CharField(max_length=40, blank=True, db_index=True)
    aws_region = models.CharField(max_length=30, default="us-west-2")
    instance_type = models.CharField(max_length=40, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    private_ip_address = models.GenericIPAddressField(null=True, blank=True)
    template = models.ForeignKey(WorkerTemplate, null=True, blank=True, on_delete=models.SET_NULL, related_name="workers")
    cml_url = models.CharField(max_length=200, blank=True, help_text="Blank: settings.CML_URL_TEMPLATE")
    cml_username = models.CharField(max_length=100, blank=True, help_text="Blank: settings.CML_USERNAME")
    # Fernet token of the worker's own CML password (apps.core.encryption; written by worker_update_connection,
    # read by cml_credentials); never rendered, returned, logged or journalled. Blank: settings.CML_PASSWORD.
    cml_password_encrypted = models.CharField(max_length=500, blank=True, editable=False)
    cml_tls_verify = models.BooleanField(
        default=True, verbose_name="verify CML's TLS certificate",
        help_text="Off only for a controller whose certificate cannot be verified (settings.CML_CA_BUNDLE): "
                  "the CML password is then sent to whoever answers at its address. Changes are journalled.")
    console_host = models.CharField(
        max_length=253, blank=True,
        help_text="The host name or address students reach this worker's console ports (CML PATty) at. "
                  "Blank: settings.CONSOLE_HOST, else the public address. Changes are journalled.")
    cml_service_status = models.CharField(max_length=30, default="unknown")
    cml_version = models.CharField(max_length=40, blank=True)
    cml_health = models.JSONField(default=dict, blank=True)
    cml_error = models.CharField(max_length=300, blank=True)
    license_status = models.CharField(max_length=30, default="unknown")
    license_tier = models.CharField(max_length=40, blank=True)
    # Declared capacity.
    cpu_cores = models.PositiveIntegerField(default=0)
    memory_gb = models.PositiveIntegerField(default=0)
    storage_gb = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=0)
    # Live usage, as last reported by CML.
    cpu_usage_percent = models.FloatField(null=True, blank=True)
    memory_usage_percent = models.FloatField(null=True, blank=True)
    memory_used_gb = models.FloatField(null=True, blank=True)
    memory_total_gb = models.FloatField(null=True, blank=True)
    nodes_running = models.PositiveIntegerField(default=0)
    draining = models.BooleanField(default=False)
    session_pool = models.CharField(max_length=50, blank=True, db_index=True,
                                    help_text="Remote-lab session pool this worker serves; blank: none.")
    last_ec2_sync_at = models.DateTimeField(null=True, blank=True)
    last_cml_sync_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # When the current boot began (launch, or a start: entering PENDING); cleared once CML is available, when
    # the time it took is folded into the template's boot_seconds (apps.workers.services.templates).
    boot_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=WorkerStatus.values), name="worker_status_valid"
            ),
            models.UniqueConstraint(
                fields=["aws_region", "aws_instance_id"],
                condition=~models.Q(aws_instance_id="") & ~models.Q(status="terminated"),
                name="worker_unique_live_instance",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.public_id})"

    @property
    def is_placeable(self) -> bool:
        """Takes new placements: running, not draining, its CML available."""
        return self.status == WorkerStatus.RUNNING and not self.draining and self.cml_service_status == "available"


class WorkerRunPeriod(models.Model):
    """One stretch of a worker in RUNNING (what EC2 bills): opened and closed by worker_transition.
    `ended_at` is null while the worker is still running."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="run_periods")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["worker", "started_at"]
        indexes = [
            models.Index(fields=["worker", "started_at"], name="run_period_worker_started"),
            models.Index(fields=["ended_at"], name="run_period_ended"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ended_at__isnull=True) | models.Q(ended_at__gte=models.F("started_at")),
                name="run_period_ordered",
            ),
        ]

    def __str__(self):
        return f"{self.worker_id}: {self.started_at:%Y-%m-%d %H:%M} - {self.ended_at or 'now'}"
