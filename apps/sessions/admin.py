"""Operators' view of the remote-lab queues: sessions (queue and active), pools, labs, pending teardowns.
Everything the services maintain is read-only here; the actions call the services."""

from django.contrib import admin, messages

from apps.sessions import services
from apps.sessions.lifecycle import LIVE
from apps.sessions.models import LabClaim, LabTeardown, Session, SessionLab, SessionPool
from apps.sessions.selectors import Principal
from apps.core.admin import ReadOnlyAdmin
from apps.workers.admin import WorkerAdmin
from apps.workers.models import Worker
from apps.core.errors import DomainError


def _operator(request) -> Principal:
    return Principal(user_id=request.user.pk, actor=request.user.get_username(), privileged=True)


class LiveFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "Waiting or active"), ("no", "Ended (reaped sessions are only in the audit journal)")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status__in=LIVE)
        if self.value() == "no":
            return queryset.exclude(status__in=LIVE)
        return queryset


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ("id", "pool", "status", "ticket", "worker", "actor", "created_at", "last_seen_at",
                    "activated_at", "ended_at", "end_reason")
    list_filter = (LiveFilter, "status", "pool")
    list_select_related = ("pool", "worker")
    search_fields = ("id", "actor", "worker__name", "worker__public_id")
    ordering = ("pool", "status", "ticket")
    readonly_fields = ("id", "pool", "ticket", "status", "position", "worker", "owner", "owner_key", "actor",
                       "client_ip",
                       "created_at", "last_seen_at", "activated_at", "ended_at", "end_reason")
    actions = ["end_sessions"]

    @admin.action(description="End selected sessions (promotes the next in the queue)")
    def end_sessions(self, request, queryset):
        ended = 0
        for session_id in queryset.filter(status__in=LIVE).values_list("pk", flat=True):
            try:
                services.session_end(session_id=session_id, principal=_operator(request),
                                     reason=f"ended by {request.user.get_username()} (admin)")
                ended += 1
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
        if ended:
            self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)


@admin.register(SessionPool)
class SessionPoolAdmin(ReadOnlyAdmin):
    list_display = ("name", "usable_workers", "next_ticket", "avg_session_seconds", "sessions_finished",
                    "maintained_at", "created_at")
    readonly_fields = list_display
    actions = ["maintain_now"]

    @admin.action(description="Reap stale sessions and promote now")
    def maintain_now(self, request, queryset):
        counts = services.sessions_reap(pool_ids=list(queryset.values_list("pk", flat=True)),
                                        actor=request.user.get_username())
        self.message_user(request, ", ".join(f"{k}: {v}" for k, v in counts.items()), messages.SUCCESS)


class LabClaimInline(admin.TabularInline):
    model = LabClaim
    extra = 0
    can_delete = False
    readonly_fields = ("session", "created_at")
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(SessionLab)
class SessionLabAdmin(ReadOnlyAdmin):
    list_display = ("worker", "status", "owner_key", "topology_name", "topology_sha256", "ref_count", "cml_lab_id",
                    "started_at", "updated_at")
    list_filter = ("status",)
    list_select_related = ("worker",)
    readonly_fields = ("worker", "status", "owner_key", "topology_name", "topology_sha256", "cml_lab_id", "ref_count",
                       "devices", "start_token", "started_at", "updated_at", "last_error",
                       # what it holds on the worker (the capacity ledger)
                       "cpu_cores", "memory_gb", "storage_gb", "node_count", "held_since")
    inlines = [LabClaimInline]
    actions = ["tear_down"]

    @admin.action(description="Tear down selected labs (drops every claim)")
    def tear_down(self, request, queryset):
        done = sum(services.session_lab_destroy_by_operator(lab=lab, actor=request.user.get_username())
                   for lab in queryset)
        self.message_user(request, f"Teardown dispatched for {done} lab(s).", messages.SUCCESS)


@admin.register(LabTeardown)
class LabTeardownAdmin(ReadOnlyAdmin):
    list_display = ("cml_lab_id", "worker", "reason", "requested_at", "attempts", "last_attempt_at", "last_error")
    list_select_related = ("worker",)
    readonly_fields = list_display + ("topology_sha256",)


admin.site.unregister(Worker)


@admin.register(Worker)
class WorkerWithPoolAdmin(WorkerAdmin):
    """The workers' admin (apps.workers.admin) with a change of remote-lab pool made through the queue's
    service (docs/remote-lab.md): this app sits above workers, so the pool is handled here."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if "session_pool" in form.changed_data:
            services.worker_session_pool_set(worker=obj, pool=form.cleaned_data["session_pool"],
                                             actor=request.user.get_username())
