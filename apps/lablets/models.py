"""Lablet definitions (lab templates) and lablet instances (a lab for a student in a timeslot)."""

import hashlib
import re

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.core.ids import definition_id, instance_id, public_id


class LabletDefinition(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=definition_id, editable=False)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40)
    description = models.TextField(blank=True)
    cml_lab_yaml = models.TextField()
    content_hash = models.CharField(max_length=64, editable=False, help_text="SHA-256 of cml_lab_yaml")
    # resource_requirements
    cpu_cores = models.PositiveIntegerField()
    memory_gb = models.PositiveIntegerField()
    storage_gb = models.PositiveIntegerField()
    node_count = models.PositiveIntegerField()
    # lifecycle
    default_duration_minutes = models.PositiveIntegerField(default=120)
    max_duration_minutes = models.PositiveIntegerField(default=240)
    idle_timeout_minutes = models.PositiveIntegerField(default=30)
    keep_lab_until_slot_end = models.BooleanField(
        default=False, db_default=False,
        help_text="Keep an instance's lab (and the capacity it holds) until its slot ends, even once it is graded. "
                  "Off: a graded instance is torn down at once (archive kept) and its capacity freed "
                  "(docs/lifecycle.md#graded-release).")
    port_definitions = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True, help_text="Deprecated definitions take no new instances.")
    trusted = models.BooleanField(
        default=False, db_default=False, help_text="Set by an admin only: the topology may bridge out of the lab (external "
                                 "connectors). Cleared when anyone else changes the topology.")
    direct_console_access = models.BooleanField(
        default=False, db_default=False,
        help_text="Students may reach their instance's console ports directly (not only through LabManager): at "
                  "RUNNING an EC2 security-group ingress rule opens each allocated port to the instance's "
                  "student_cidr; removed at teardown (docs/workers.md#direct-console-access).")
    warm_pool_depth = models.PositiveIntegerField(
        default=0, db_default=0,
        help_text="Labs of this definition kept imported and booted ahead, so that a lablet instance starting now "
                  "takes one and runs within seconds (docs/workers.md#warm-pools). 0: none.")
    # The CML lab the topology is maintained in (POST .../sync pulls it back from there).
    reference_lab_id = models.CharField(max_length=64, blank=True)
    reference_worker = models.ForeignKey(
        "workers.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    synced_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who may change it besides admins (apps.api.permissions.may_change_definition); everyone with a role reads
    # it. Ownerless (the owner deleted, or imported by a command): admins only.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="definition_unique_name_version"),
            models.CheckConstraint(
                condition=models.Q(max_duration_minutes__gte=models.F("default_duration_minutes")),
                name="definition_max_duration_covers_default",
            ),
        ]

    def __str__(self):
        return f"{self.name} {self.version}"

    @staticmethod
    def hash_yaml(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()


class InstanceStatus(models.TextChoices):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    INSTANTIATING = "instantiating"
    RUNNING = "running"
    COLLECTING = "collecting"
    GRADING = "grading"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ARCHIVED = "archived"
    TERMINATED = "terminated"


BOOTING = re.compile(r"nodes booting (\d+)/(\d+)")  # lifecycle_step while nodes boot (services.instances.progress_text)


class LabletInstance(models.Model):
    public_id = models.CharField(max_length=40, unique=True, default=instance_id, editable=False)
    definition = models.ForeignKey(LabletDefinition, on_delete=models.PROTECT, related_name="instances")
    owner_id = models.CharField(max_length=150, db_index=True, help_text="The student.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    timeslot_start = models.DateTimeField(db_index=True)
    timeslot_end = models.DateTimeField()
    reservation_id = models.CharField(max_length=100, blank=True)
    worker = models.ForeignKey(
        "workers.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="instances"
    )
    cml_lab_id = models.CharField(max_length=64, blank=True)
    priority = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    status = models.CharField(
        max_length=20, choices=InstanceStatus.choices, default=InstanceStatus.PENDING, db_index=True
    )
    # The time each state was reached (stamped by the lifecycle function).
    scheduled_at = models.DateTimeField(null=True, blank=True)
    instantiating_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    collecting_at = models.DateTimeField(null=True, blank=True)
    grading_at = models.DateTimeField(null=True, blank=True)
    stopping_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    artifacts = models.JSONField(default=list, blank=True)
    grading_result = models.JSONField(null=True, blank=True)
    # What the instance needs, copied from its definition at creation (a later edit of the definition
    # does not change what was booked).
    cpu_cores = models.PositiveIntegerField(default=0)
    memory_gb = models.PositiveIntegerField(default=0)
    storage_gb = models.PositiveIntegerField(default=0)
    node_count = models.PositiveIntegerField(default=0)
    port_count = models.PositiveIntegerField(default=0)
    # The lifecycle engine's bookkeeping.
    termination_reason = models.CharField(max_length=200, blank=True)
    lifecycle_step = models.CharField(max_length=200, blank=True, help_text="Progress of long work, e.g. 'nodes booting 3/5'.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Failed attempts of the current step.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    console = models.JSONField(default=list, blank=True, help_text="Console access per port definition.")
    student_cidr = models.CharField(
        max_length=50, blank=True, default="", db_default="",
        help_text="The student's address range (IPv4/IPv6 CIDR): with a definition's direct_console_access, the "
                  "console ports are opened to it in the worker's security group while the lab runs.")
    # The security-group ingress rules opened for the student ({group_id, region, cidr, ports}), {} when none:
    # written only by apps/lablets/services/console_access.py.
    console_access = models.JSONField(default=dict, blank=True)
    archive_key = models.CharField(max_length=300, blank=True, help_text="S3 key prefix of the archive.")
    expiring_notified_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True)
    # Set once the instance's CML lab is known to be gone (deleted, or never imported): until then a
    # terminated instance that reached instantiating is swept by the engine's cleanup (docs/lifecycle.md).
    cml_lab_removed_at = models.DateTimeField(null=True, blank=True)
    # The engine's lease: a process working on the instance's current step (network calls included)
    # holds it until then; a process killed mid-step loses it when it runs out. Not the retry time
    # (`next_attempt_at`).
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="instance_status_created"),
            # The interval check: a worker's live bookings that overlap a slot, seeking by
            # (worker, status) then ranging on the start; terminated history is never scanned.
            models.Index(fields=["worker", "status", "timeslot_start"], name="instance_worker_booking"),
            # The lifecycle tick: what is due in a state.
            models.Index(fields=["status", "timeslot_start"], name="instance_status_start"),
            models.Index(fields=["status", "timeslot_end"], name="instance_status_end"),
            models.Index(fields=["owner_id", "status"], name="instance_owner_status"),
            # The scheduler status's counts of instances ended today.
            models.Index(fields=["terminated_at"], name="instance_terminated_at"),
            # The engine's cleanup of labs left behind by terminated instances: a handful of rows, never history.
            models.Index(
                fields=["next_attempt_at"], name="instance_lab_cleanup",
                condition=models.Q(status="terminated", cml_lab_removed_at__isnull=True,
                                   instantiating_at__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=InstanceStatus.values), name="instance_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(timeslot_end__gt=models.F("timeslot_start")), name="instance_timeslot_ordered"
            ),
            models.CheckConstraint(
                condition=models.Q(priority__gte=1, priority__lte=10), name="instance_priority_range"
            ),
        ]

    def __str__(self):
        return f"{self.public_id} ({self.owner_id}, {self.status})"

    @property
    def nodes_booting(self) -> tuple[int, int] | None:
        """(booted, total) while the lab's nodes boot ('nodes booting 3/5'), else None: the progress bar."""
        found = BOOTING.fullmatch(self.lifecycle_step) if self.status == InstanceStatus.INSTANTIATING else None
        return (int(found[1]), int(found[2])) if found else None


class ConsolePort(models.Model):
    """A console port on a worker, held by one running lab from instantiation until termination: an instance's,
    or a warm lab's until an instance takes it over (the port moves with the lab)."""

    worker = models.ForeignKey("workers.Worker", on_delete=models.CASCADE, related_name="console_ports")
    port = models.PositiveIntegerField()
    instance = models.ForeignKey(LabletInstance, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="console_ports")
    warm_lab = models.ForeignKey("WarmLab", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="console_ports")
    name = models.CharField(max_length=100, blank=True, help_text="The port definition it serves.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["worker", "port"]
        constraints = [
            models.UniqueConstraint(fields=["worker", "port"], name="console_port_unique_per_worker"),
            models.CheckConstraint(
                condition=(models.Q(instance__isnull=False, warm_lab__isnull=True)
                           | models.Q(instance__isnull=True, warm_lab__isnull=False)),
                name="console_port_one_holder"),
        ]

    def __str__(self):
        return f"{self.worker_id}:{self.port} -> {self.instance_id or self.warm_lab_id}"


class StudentLink(models.Model):
    """A student's own link to one instance (no account): only the token's SHA-256 is stored, like API keys.
    Rotation revokes the current link and makes a new one; at most one unrevoked link per instance."""

    instance = models.ForeignKey(LabletInstance, on_delete=models.CASCADE, related_name="student_links")
    token_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 (hex) of the token.")
    prefix = models.CharField(max_length=12, help_text="The token's first characters: names it in lists.")
    # Null: the instance's timeslot end + STUDENT_LINK_GRACE_MINUTES (follows extensions).
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, help_text="The actor that made it.")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # When `student_link.used` was last journalled (at most once per STUDENT_LINK_USE_JOURNAL_MINUTES).
    use_journalled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["instance"], condition=models.Q(revoked_at__isnull=True),
                                    name="student_link_one_unrevoked_per_instance"),
        ]

    def __str__(self):
        return f"{self.prefix}… -> {self.instance_id}"


def warm_lab_id() -> str:
    return public_id("warm")


class WarmLabStatus(models.TextChoices):
    STARTING = "starting"  # placed on a worker; being imported and booted
    READY = "ready"  # every node booted: an instance starting now may take it
    TAKEN = "taken"  # an instance took it over (its lab, ports and capacity): no longer the pool's
    RECYCLING = "recycling"  # stale, too old, surplus or broken: being deleted from CML
    RECYCLED = "recycled"  # gone from CML


class WarmLab(models.Model):
    """A lab of a definition imported and booted ahead on a worker (the definition's warm pool), held in the
    capacity ledger (kind `warm_lab`, open-ended) until an instance takes it or it is recycled.
    docs/workers.md#warm-pools. Status and results are written only by apps/lablets/services/warm.py."""

    public_id = models.CharField(max_length=40, unique=True, default=warm_lab_id, editable=False)
    definition = models.ForeignKey(LabletDefinition, on_delete=models.CASCADE, related_name="warm_labs")
    worker = models.ForeignKey("workers.Worker", on_delete=models.CASCADE, related_name="warm_labs")
    cml_lab_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=20, choices=WarmLabStatus.choices, default=WarmLabStatus.STARTING,
                              db_index=True)
    # What the lab was built from: the definition's content hash, and a fingerprint of everything else that
    # shapes it (console port definitions, need). A definition edit makes older warm labs stale.
    content_hash = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=64)
    # What it holds on its worker (the definition's need when it was placed).
    cpu_cores = models.PositiveIntegerField(default=0)
    memory_gb = models.PositiveIntegerField(default=0)
    storage_gb = models.PositiveIntegerField(default=0)
    node_count = models.PositiveIntegerField(default=0)
    port_count = models.PositiveIntegerField(default=0)
    taken_by = models.OneToOneField(LabletInstance, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="warm_lab")
    recycle_reason = models.CharField(max_length=200, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The pool's lease: a process importing, booting or deleting the lab holds it until then.
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Taken or recycled: it left the pool.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["definition", "status"], name="warm_lab_definition_status"),
                   models.Index(fields=["worker", "status"], name="warm_lab_worker_status")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=WarmLabStatus.values), name="warm_lab_status_valid"),
        ]

    def __str__(self):
        return f"{self.public_id} ({self.definition_id}, {self.status})"
