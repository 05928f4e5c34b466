"""Accounts the provider created before accounts were linked by (issuer, subject).

Until issue 19 (item 8) a provider's user was found by `preferred_username`, and nothing recorded their
`sub`: it cannot be recovered here. What is known is which accounts the provider made: the journal's
`user.created` with `via` = `oidc-login` or `bearer`, for a user whose password is unusable (no local
password was ever set). Each gets a link without a subject; the first sign-in (browser or bearer) with that
username links it to its (issuer, subject), as before, once. Every other account (createsuperuser,
seed_demo, user_ensure_with_role) is local and is never taken over by a provider's user of the same name.
"""

from django.db import migrations

PROVIDER_VIAS = ("oidc-login", "bearer")
UNUSABLE_PASSWORD_PREFIX = "!"  # django.contrib.auth.hashers.UNUSABLE_PASSWORD_PREFIX


def forward(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    User = apps.get_model("auth", "User")
    ProviderIdentity = apps.get_model("identity", "ProviderIdentity")
    names = set()
    for username, metadata in AuditEvent.objects.filter(event_type="user.created", resource_type="user").values_list(
            "resource_id", "metadata").iterator():
        if isinstance(metadata, dict) and metadata.get("via") in PROVIDER_VIAS:
            names.add(username)
    for user in User.objects.filter(username__in=names, provider_identity__isnull=True):
        if user.password.startswith(UNUSABLE_PASSWORD_PREFIX):
            ProviderIdentity.objects.create(user=user, issuer="", subject=None, preferred_username=user.username)


def backward(apps, schema_editor):
    apps.get_model("identity", "ProviderIdentity").objects.filter(subject__isnull=True).delete()


class Migration(migrations.Migration):

    dependencies = [("identity", "0002_provider_identity"), ("audit", "0006_timestamp_brin")]

    operations = [migrations.RunPython(forward, backward)]
