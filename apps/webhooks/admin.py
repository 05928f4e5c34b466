from django import forms
from django.contrib import admin, messages

from apps.webhooks import services
from apps.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookSubscription
from apps.core.admin import ReadOnlyAdmin
from apps.core.errors import DomainError


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    # Write-only: left empty on change, the secret stays as it is; on add, empty generates one.
    secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                             help_text="Leave empty to keep the current secret (or to generate one on add).")

    class Meta:
        model = WebhookSubscription
        fields = ["url", "description", "event_types", "active", "secret"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            services.webhook_url_validate(url)
        except DomainError as exc:
            raise forms.ValidationError(exc.detail) from None
        return url


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ("public_id", "url", "active", "consecutive_failures", "total_failures", "last_success_at",
                    "disabled_at")
    list_filter = ("active",)
    search_fields = ("public_id", "url", "description")
    readonly_fields = ("public_id", "created_by", "last_sequence_num", "consecutive_failures", "total_failures",
                       "total_deliveries", "last_success_at", "last_failure_at", "disabled_at", "disabled_reason",
                       "created_at", "updated_at")
    actions = ["enable", "disable"]

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data[k] for k in ("url", "description", "event_types", "active")}
        actor = request.user.get_username()
        try:
            if change:
                if form.cleaned_data["secret"]:
                    data["secret"] = form.cleaned_data["secret"]
                saved = services.webhook_subscription_update(subscription=obj, actor=actor, **data)
            else:
                saved = services.webhook_subscription_create(actor=actor, created_by=request.user,
                                                             secret=form.cleaned_data["secret"], **data)
        except DomainError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        obj.pk, obj.public_id = saved.pk, saved.public_id

    def delete_model(self, request, obj):
        services.webhook_subscription_delete(subscription=obj, actor=request.user.get_username())

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)

    def _set_active(self, request, queryset, active: bool):
        for obj in queryset:
            try:
                services.webhook_subscription_update(subscription=obj, actor=request.user.get_username(), active=active)
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)

    @admin.action(description="Enable the selected webhooks")
    def enable(self, request, queryset):
        self._set_active(request, queryset, True)

    @admin.action(description="Disable the selected webhooks")
    def disable(self, request, queryset):
        self._set_active(request, queryset, False)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "event_type", "subscription", "status", "attempts", "next_attempt_at", "finished_at")
    list_filter = ("status", "event_type")
    search_fields = ("event_id", "subscription__public_id")


@admin.register(WebhookDeliveryAttempt)
class WebhookDeliveryAttemptAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "event_type", "subscription", "attempt", "success", "status_code", "error",
                    "duration_ms", "delivered_at")
    list_filter = ("success", "event_type")
    search_fields = ("event_id", "subscription__public_id")
