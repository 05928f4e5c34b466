from django.contrib import admin

from apps.fleet.models import OrphanLab
from apps.core.admin import ReadOnlyAdmin


@admin.register(OrphanLab)
class OrphanLabAdmin(ReadOnlyAdmin):
    """Labs on a worker's CML that nothing in LabManager owns (docs/workers.md#reconciliation-with-ec2-and-cml):
    the reconciliation lists and removes them; read-only here."""

    list_display = ("cml_lab_id", "title", "worker", "first_seen_at", "last_seen_at", "removed_at", "last_error")
    list_filter = (("removed_at", admin.EmptyFieldListFilter),)
    search_fields = ("cml_lab_id", "title", "worker__public_id", "worker__name")
    list_select_related = ("worker",)
