"""The fleet's own records (planner decisions are journal rows; see services)."""

from django.db import models


class OrphanLab(models.Model):
    """A lab found on a worker's CML that belongs to no lablet instance, session lab, definition's reference lab
    or warm lab (apps.fleet.reconcile). Listed from the time it was first seen; removed from CML after
    FLEET_ORPHAN_LAB_GRACE_MINUTES (`removed_at`, the row kept as history). A lab that becomes known again, or
    leaves CML by other hands, is dropped from the list (its row deleted)."""

    worker = models.ForeignKey("workers.Worker", on_delete=models.CASCADE, related_name="orphan_labs")
    cml_lab_id = models.CharField(max_length=64)
    title = models.CharField(max_length=255, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, help_text="Why the last removal failed.")

    class Meta:
        ordering = ["first_seen_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["worker", "cml_lab_id"], condition=models.Q(removed_at__isnull=True),
                                    name="orphan_lab_one_open_per_lab"),
        ]

    def __str__(self):
        return f"orphan lab {self.cml_lab_id} on {self.worker_id}"
