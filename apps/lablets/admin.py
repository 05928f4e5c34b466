from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.lablets import services
from apps.lablets.models import LabletDefinition, LabletInstance, WarmLab
from apps.lablets.services.awaited import (
    lablet_definition_sync_begin,
    lablet_instance_start_collection_begin,
    lablet_instance_terminate_begin,
)
from apps.api.roles import ADMIN, has_role
from apps.audit.api.refusals import journal_page_refusal
from apps.core.admin import NoDeleteAdmin, ServiceDeleteAdmin
from apps.core.errors import DomainError, Forbidden


def _run(modeladmin, request, queryset, call, verb, noun):
    done = 0
    for obj in queryset:
        try:
            call(obj, request.user.get_username())  # definitions: the service decides who may (their owner, admins)
            done += 1
        except Forbidden as exc:  # who asked may not (another's definition): journalled as the API's refusal is
            journal_page_refusal(request, exc)
            modeladmin.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)
        except DomainError as exc:
            modeladmin.message_user(request, exc.detail, messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} {noun}.", messages.SUCCESS)


@admin.register(LabletDefinition)
class LabletDefinitionAdmin(ServiceDeleteAdmin):
    list_display = ("name", "version", "public_id", "owner", "is_active", "trusted", "cpu_cores", "memory_gb",
                    "node_count", "max_duration_minutes", "warm_pool_depth", "updated_at", "dashboard_link")
    list_select_related = ("owner",)
    list_filter = ("is_active", "trusted")
    search_fields = ("name", "version", "public_id", "description")
    actions = ["delete_selected", "deprecate", "activate", "sync_from_cml"]

    def view_on_site(self, obj):  # "View on site" opens the definition's dashboard page
        return reverse("lablets:definition_detail", args=[obj.public_id])

    def delete_through_service(self, request, obj):
        # The owner rule (403), the in-use check (409) and the journal (lablet_definition.deleted), as for the API
        services.lablet_definition_delete(definition=obj, user=request.user, actor=request.user.get_username())

    def on_delete_refused(self, request, obj, exc):
        if isinstance(exc, Forbidden):  # journalled as the API's refusal is
            journal_page_refusal(request, exc)
        super().on_delete_refused(request, obj, exc)

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj):
        return format_html('<a href="{}">open</a>', self.view_on_site(obj))

    def get_readonly_fields(self, request, obj=None):
        # Definitions are written through the API (validated there); the admin shows them. An admin (not an
        # operator) may tick `trusted`: the topology may then use external connectors (docs/security.md), and set
        # the warm pool's depth (docs/workers.md#warm-pools).
        editable = {"trusted", "warm_pool_depth"} if has_role(request.user, ADMIN) else set()
        return [f.name for f in self.model._meta.fields if f.name not in editable]

    def has_add_permission(self, request):
        return False

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if "warm_pool_depth" in form.base_fields:  # left out of a post: unchanged
            form.base_fields["warm_pool_depth"].required = False
        return form

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in ("trusted", "warm_pool_depth")
                if name in form.changed_data and form.cleaned_data[name] is not None}
        if data:  # through the service, journalled (lablet_definition.updated)
            services.lablet_definition_update(definition=LabletDefinition.objects.get(pk=obj.pk), user=request.user,
                                              actor=request.user.get_username(), data=data,
                                              may_trust=has_role(request.user, ADMIN))

    @admin.action(description="Deprecate selected definitions")
    def deprecate(self, request, queryset):
        _run(self, request, queryset,
             lambda d, actor: services.lablet_definition_update(definition=d, user=request.user, actor=actor,
                                                                data={"is_active": False}),
             "Deprecated", "definition(s)")

    @admin.action(description="Sync the topology from the reference CML lab (a background job each)")
    def sync_from_cml(self, request, queryset):
        _run(self, request, queryset,
             lambda d, actor: lablet_definition_sync_begin(definition=d, user=request.user, actor=actor,
                                                           may_trust=has_role(request.user, ADMIN)),
             "Sync of", "definition(s) queued; results appear in the audit journal (lablet_definition.synced), "
                        "a refusal as its task's result (Django Q, Successful tasks)")

    @admin.action(description="Re-activate selected definitions")
    def activate(self, request, queryset):
        _run(self, request, queryset,
             lambda d, actor: services.lablet_definition_update(definition=d, user=request.user, actor=actor,
                                                                data={"is_active": True}),
             "Activated", "definition(s)")


@admin.register(LabletInstance)
class LabletInstanceAdmin(NoDeleteAdmin):  # an instance ends by "Terminate" (its lab torn down, journalled)
    list_display = ("public_id", "definition", "owner_id", "status", "worker", "timeslot_start", "timeslot_end",
                    "priority", "created_by", "dashboard_link")
    list_filter = ("status", "definition", "worker")
    search_fields = ("public_id", "owner_id", "reservation_id", "cml_lab_id")
    list_select_related = ("definition", "worker", "created_by")
    date_hierarchy = "timeslot_start"
    actions = ["extend_30", "start_collection", "start_grading", "terminate"]

    def view_on_site(self, obj):  # "View on site" opens the instance's dashboard page
        return reverse("lablets:instance_detail", args=[obj.public_id])

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj):
        return format_html('<a href="{}">open</a>', self.view_on_site(obj))

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Extend by 30 minutes")
    def extend_30(self, request, queryset):
        _run(self, request, queryset,
             lambda i, actor: services.lablet_instance_extend(instance=i, actor=actor, minutes=30),
             "Extended", "instance(s) by 30 minutes")

    @admin.action(description="Start collection")
    def start_collection(self, request, queryset):
        _run(self, request, queryset,
             lambda i, actor: lablet_instance_start_collection_begin(instance=i, actor=actor),
             "Requested collection on", "instance(s) (a background job asks CML)")

    @admin.action(description="Start grading")
    def start_grading(self, request, queryset):
        _run(self, request, queryset,
             lambda i, actor: services.lablet_instance_start_grading(instance=i, actor=actor),
             "Started grading on", "instance(s)")

    @admin.action(description="Terminate")
    def terminate(self, request, queryset):
        _run(self, request, queryset,
             lambda i, actor: lablet_instance_terminate_begin(instance=i, actor=actor),
             "Ended", "instance(s) (their labs are torn down by a background job)")


@admin.register(WarmLab)
class WarmLabAdmin(NoDeleteAdmin):  # written by the warm pools only (apps/lablets/services/warm.py): shown here
    list_display = ("public_id", "definition", "worker", "status", "cml_lab_id", "created_at", "ready_at", "ended_at",
                    "taken_by", "recycle_reason")
    list_select_related = ("definition", "worker", "taken_by")
    list_filter = ("status",)
    search_fields = ("public_id", "cml_lab_id", "definition__public_id", "worker__public_id")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
