from django.contrib import admin

from apps.api.models import ApiKey
from apps.identity.models import ProviderIdentity
from apps.identity.services import api_key_revoke
from apps.core.admin import NoDeleteAdmin


@admin.register(ApiKey)
class ApiKeyAdmin(NoDeleteAdmin):
    """Keys are created with `manage.py create_api_key` or POST /api/auth/api-keys (the key is shown once);
    here they are seen and revoked (through the service, journalled). Nothing else is editable, and nothing is
    deleted here (a deleted row would drop the key without a journalled revocation: revoke it)."""

    list_display = ("prefix", "user", "name", "role", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("role", "revoked_at", "expires_at")
    search_fields = ("prefix", "user__username", "name", "key_hash")
    readonly_fields = ("user", "name", "prefix", "key_hash", "role", "created_at", "last_used_at", "expires_at",
                       "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True).select_related("user"))
        for api_key in keys:
            api_key_revoke(api_key=api_key, actor=request.user.get_username())
        self.message_user(request, f"Revoked {len(keys)} key(s).")


@admin.register(ProviderIdentity)
class ProviderIdentityAdmin(admin.ModelAdmin):
    """Which account is which provider user (issuer, subject). Read-only: links are made at sign-in and
    checked by the provider sync (apps.identity.services_provider); deleting the user deletes the link."""

    list_display = ("user", "preferred_username", "issuer", "subject", "last_checked_at", "deprovisioned_at")
    list_filter = ("issuer",)
    search_fields = ("user__username", "preferred_username", "subject")
    readonly_fields = list_display + ("created_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # links are made and checked by the services (sign-in, provider sync), never unjournalled
