"""Admin building blocks shared by the apps."""

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext_lazy

from apps.core.errors import DomainError


class ReadOnlyAdmin(admin.ModelAdmin):
    """A model the admin shows but never adds, changes or deletes (journals, logs, lifecycle records):
    changes go through the services, from the API, the dashboard or an admin action."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class NoDeleteAdmin(admin.ModelAdmin):
    """A model whose rows no service deletes (they end through a lifecycle verb, e.g. terminate or revoke, that
    the admin offers as an action): neither the delete button nor "Delete selected" is offered, and its delete
    page is refused (403). Deleting a row they belong to (a user and the user's API keys) still takes them
    along: the permission itself is kept, because the admin asks it of every row such a delete cascades to."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "show_delete": False})

    def delete_view(self, request, object_id, extra_context=None):
        raise PermissionDenied


class _DeleteRefused(Exception):
    def __init__(self, deleted: int, refusals: list):
        super().__init__(refusals)
        self.deleted, self.refusals = deleted, refusals  # refusals: [(obj, DomainError)]


class ServiceDeleteAdmin(admin.ModelAdmin):
    """A model whose rows are deleted only by a service (who may, what is in use, the journal): the delete
    button and "Delete selected" call `delete_through_service` for each object. A refusal is an error message
    (`on_delete_refused`, after the admin's own transaction rolled back), never reported as deleted; the
    admin's change log gets a deletion only for what the service deleted."""

    def delete_through_service(self, request, obj) -> None:
        raise NotImplementedError

    def on_delete_refused(self, request, obj, exc: DomainError) -> None:
        self.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)

    def log_deletions(self, request, queryset):
        """Logged in `_delete`, with each deletion the service made (Django logs before it deletes)."""

    def _delete(self, request, objs) -> None:
        deleted, refusals = 0, []
        for obj in objs:
            try:
                with transaction.atomic():  # the change log's row goes with a refusal
                    super().log_deletions(request, [obj])
                    self.delete_through_service(request, obj)
                deleted += 1
            except DomainError as exc:
                refusals.append((obj, exc))
        if refusals:
            raise _DeleteRefused(deleted, refusals)

    def delete_model(self, request, obj):
        self._delete(request, [obj])

    def delete_queryset(self, request, queryset):
        self._delete(request, list(queryset))

    def _report(self, request, refused: _DeleteRefused) -> None:
        for obj, exc in refused.refusals:
            self.on_delete_refused(request, obj, exc)
        if refused.deleted:
            self.message_user(request, f"Deleted {refused.deleted} {self.opts.verbose_name_plural}.",
                              messages.SUCCESS)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except _DeleteRefused as refused:  # the delete view's transaction has rolled back
            self._report(request, refused)
            opts = self.opts
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id],
                                    current_app=self.admin_site.name))

    @admin.action(permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s"))
    def delete_selected(self, request, queryset):
        """Django's own (its confirmation page), with the deletions made by the service."""
        try:
            return django_delete_selected(self, request, queryset)
        except _DeleteRefused as refused:
            self._report(request, refused)
            return None
