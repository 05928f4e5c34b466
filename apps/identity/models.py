"""A LabManager user's identity at the OpenID provider: (issuer, subject), the only key a provider's user is
found by. `preferred_username` is a display name the provider lets people change and can hand to anyone, so
it never picks an account (issue 19, item 8)."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ProviderIdentity(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_identity")
    issuer = models.CharField(max_length=255, help_text="`iss` of the provider's tokens, without a trailing /")
    subject = models.CharField(
        max_length=255, null=True, blank=True,
        help_text="`sub` of the provider's tokens. Empty: an account the provider created before accounts were "
                  "linked (migration 0003); the first sign-in with its username links it.")
    preferred_username = models.CharField(max_length=255, blank=True, help_text="as the provider last named the user")
    created_at = models.DateTimeField(auto_now_add=True)
    last_checked_at = models.DateTimeField(null=True, blank=True,
                                           help_text="the provider last confirmed the user and their roles")
    deprovisioned_at = models.DateTimeField(null=True, blank=True,
                                            help_text="the provider sync found the user gone or without a role")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], condition=Q(subject__isnull=False),
                                    name="identity_issuer_subject_unique"),
        ]
        verbose_name = "provider identity"
        verbose_name_plural = "provider identities"

    def __str__(self):
        return f"{self.user_id} = {self.issuer} {self.subject or '(not linked yet)'}"
