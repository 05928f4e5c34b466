from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from apps.workers import services
from apps.workers.services import CONNECTION_FIELDS
from apps.workers.models import Worker, WorkerRunPeriod, WorkerTemplate
from apps.core.admin import NoDeleteAdmin, ReadOnlyAdmin
from apps.core.errors import DomainError


def _run(modeladmin, request, queryset, service, verb):
    done = 0
    for worker in queryset:
        try:
            service(worker=worker, actor=request.user.get_username())
            done += 1
        except DomainError as exc:
            modeladmin.message_user(request, exc.detail, messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} worker(s).", messages.SUCCESS)


class WorkerAdminForm(forms.ModelForm):
    """The CML password is write-only: the page never holds it (not even encrypted); a blank field keeps the
    stored one, the checkbox clears it."""

    cml_password = forms.CharField(
        required=False, strip=False, max_length=200, label="CML password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only, stored encrypted. Leave blank to keep the stored one; changing the CML URL or "
                  "turning TLS verification off clears it unless you enter it again here. None stored: "
                  "settings.CML_PASSWORD, only if the CML URL is blank (the settings' URL).")
    cml_password_clear = forms.BooleanField(required=False, label="Clear the stored CML password")

    class Meta:
        model = Worker
        fields = "__all__"

    def connection_changes(self) -> dict:
        """What worker_update_connection gets: the connection fields changed on the form."""
        changes = {f: self.cleaned_data[f] for f in CONNECTION_FIELDS if f in self.changed_data}
        if self.cleaned_data.get("cml_password_clear"):
            changes["cml_password"] = ""
        elif not self.cleaned_data.get("cml_password"):
            changes.pop("cml_password", None)
        return changes


@admin.register(Worker)
class WorkerAdmin(NoDeleteAdmin):  # a worker ends by "Terminate" (EC2 first, journalled); the record stays
    form = WorkerAdminForm
    list_display = ("name", "public_id", "status", "aws_instance_id", "aws_region", "instance_type",
                    "cml_service_status", "cml_tls_verify", "license_status", "nodes_running", "draining",
                    "session_pool", "last_cml_sync_at",
                    "dashboard_link")
    list_filter = ("status", "aws_region", "instance_type", "cml_service_status", "license_status", "draining",
                   "session_pool", "cml_tls_verify")
    search_fields = ("name", "public_id", "aws_instance_id", "ip_address")
    # Operators may change the declared capacity and the CML connection; everything EC2 or CML reports,
    # and the status, is read-only (changed by the actions below, which call the services).
    fields = ("name", "public_id", "status", "draining", "session_pool", "aws_instance_id", "aws_region", "instance_type",
              "ip_address", "private_ip_address", "template", "cpu_cores", "memory_gb", "storage_gb", "max_nodes",
              "cml_url", "cml_username", "console_host", "cml_password_status", "cml_password", "cml_password_clear", "cml_tls_verify",
              "cml_service_status", "cml_version", "cml_error",
              "license_status", "license_tier", "cpu_usage_percent", "memory_usage_percent", "memory_used_gb",
              "memory_total_gb", "nodes_running", "cml_health", "status_changed_at", "last_ec2_sync_at",
              "last_cml_sync_at", "created_at", "updated_at")
    readonly_fields = ("cml_password_status",
                       "public_id", "status", "draining", "aws_instance_id", "aws_region", "instance_type",
                       "ip_address", "private_ip_address", "template", "cml_service_status", "cml_version",
                       "cml_error", "license_status", "license_tier", "cpu_usage_percent", "memory_usage_percent",
                       "memory_used_gb", "memory_total_gb", "nodes_running", "cml_health", "status_changed_at",
                       "last_ec2_sync_at", "last_cml_sync_at", "created_at", "updated_at")
    actions = ["start_workers", "stop_workers", "drain_workers", "undrain_workers", "sync_now", "terminate_workers"]

    def view_on_site(self, obj):  # "View on site" opens the worker's card on the dashboard's fleet page
        return f"{reverse('dashboard:fleet')}#{obj.public_id}"

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj):
        return format_html('<a href="{}">fleet</a>', self.view_on_site(obj))

    @admin.display(description="CML password")
    def cml_password_status(self, obj):
        if obj.cml_password_encrypted:
            return "stored (encrypted)"
        if obj.cml_url and not settings.CML_URL_OVERRIDE:
            return "none stored: no password (the worker has a CML URL of its own)"
        return "none stored: settings.CML_PASSWORD"

    def save_model(self, request, obj, form, change):
        capacity = {f: form.cleaned_data[f] for f in services.CAPACITY_FIELDS if f in form.changed_data}
        if capacity:
            services.worker_update_capacity(worker=obj, actor=request.user.get_username(), capacity=capacity)
        changes = form.connection_changes()
        if changes:
            services.worker_update_connection(worker=obj, actor=request.user.get_username(), changes=changes)

    def has_add_permission(self, request):
        return False  # workers are imported or launched through the API (POST /api/workers)

    @admin.action(description="Start selected workers")
    def start_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_start, "Started")

    @admin.action(description="Stop selected workers")
    def stop_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_stop, "Stopped")

    @admin.action(description="Drain selected workers (no new placements)")
    def drain_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_drain, "Drained")

    @admin.action(description="Undrain selected workers")
    def undrain_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_undrain, "Undrained")

    @admin.action(description="Sync now (EC2 state and CML health, as background jobs)")
    def sync_now(self, request, queryset):
        actor = request.user.get_username()
        services.worker_ec2_sync_begin(actor=actor)
        running = list(queryset.filter(status="running"))
        for worker in running:
            services.worker_cml_health_begin(worker=worker, actor=actor)
        self.message_user(request, f"EC2 sync and CML check of {len(running)} running worker(s) queued; results "
                                   "appear on the workers (last EC2 / CML sync) and their changes in the audit journal.",
                          messages.SUCCESS)

    @admin.action(description="Terminate selected workers")
    def terminate_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_terminate, "Terminated")


@admin.register(WorkerTemplate)
class WorkerTemplateAdmin(NoDeleteAdmin):  # created and changed through the services; no service deletes one
    list_display = ("name", "public_id", "instance_type", "aws_region", "cpu_cores", "memory_gb", "max_nodes",
                    "license_tier", "cost_per_hour", "scalable", "min_workers", "max_workers", "boot_seconds")
    list_filter = ("scalable",)
    search_fields = ("name", "instance_type")
    readonly_fields = ("public_id", "boot_seconds", "boot_samples", "created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data[f] for f in form.changed_data}
        if change:
            services.worker_template_update(template=obj, actor=request.user.get_username(), data=data)
        else:
            created = services.worker_template_create(actor=request.user.get_username(), data=form.cleaned_data)
            obj.pk = created.pk


@admin.register(WorkerRunPeriod)
class WorkerRunPeriodAdmin(ReadOnlyAdmin):
    """Running-hours, recorded by worker_transition: read-only (`manage.py fleet_report` sums them)."""

    list_display = ("worker", "started_at", "ended_at")
    list_select_related = ("worker",)
    date_hierarchy = "started_at"
    search_fields = ("worker__name", "worker__public_id")
