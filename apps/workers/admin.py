from django.contrib import admin, messages

from apps.workers import services
from apps.workers.models import Worker
from labmanager.errors import DomainError


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


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "public_id", "status", "aws_instance_id", "aws_region", "instance_type",
                    "cml_service_status", "license_status", "draining", "updated_at")
    list_filter = ("status", "aws_region", "instance_type", "cml_service_status", "license_status", "draining")
    search_fields = ("name", "public_id", "aws_instance_id", "ip_address")
    readonly_fields = ("public_id", "status", "status_changed_at", "last_ec2_sync_at", "last_cml_sync_at",
                       "created_at", "updated_at")
    actions = ["start_workers", "stop_workers", "terminate_workers"]

    def has_add_permission(self, request):
        return False  # workers are imported or launched through the API (POST /api/workers)

    @admin.action(description="Start selected workers")
    def start_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_start, "Started")

    @admin.action(description="Stop selected workers")
    def stop_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_stop, "Stopped")

    @admin.action(description="Terminate selected workers")
    def terminate_workers(self, request, queryset):
        _run(self, request, queryset, services.worker_terminate, "Terminated")
