from django.contrib import admin

from apps.audit.models import AuditEvent
from apps.core.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Append-only: viewable, never added, changed or deleted here (the model refuses it too)."""

    list_display = ("sequence_num", "timestamp", "event_type", "actor", "resource_type", "resource_id", "success",
                    "ip_address")
    list_filter = ("event_type", "resource_type", "success")
    search_fields = ("resource_id", "actor", "user_id", "event_type", "trace_id", "event_hash")
    date_hierarchy = "timestamp"
    ordering = ("-id",)
    show_full_result_count = False  # no second COUNT(*) over a large journal on every page

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]
