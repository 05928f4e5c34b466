"""Deployment check (`manage.py check --deploy`): with OIDC on, the provider sync needs its admin client.

Without OIDC_ADMIN_CLIENT_ID/SECRET the scheduled provider sync is off: browser sessions are still re-checked,
bearer tokens expire, but the API keys of users removed or demoted at the provider keep working.
"""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def provider_sync_check(app_configs, **kwargs):
    if not settings.OIDC_ISSUER or (settings.OIDC_ADMIN_CLIENT_ID and settings.OIDC_ADMIN_CLIENT_SECRET):
        return []
    return [Warning(
        "OIDC is on but OIDC_ADMIN_CLIENT_ID / OIDC_ADMIN_CLIENT_SECRET are not both set: the provider sync is off.",
        hint="The API keys of users removed, disabled or demoted at the identity provider then never stop working "
             "(only browser sessions are re-checked). Set both to the realm's service-account client "
             "labmanager-provider-sync (docs/security-identity.md#the-provider-sync).",
        id="identity.W001",
    )]
