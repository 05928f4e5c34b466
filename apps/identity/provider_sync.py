"""The scheduled provider sync: every linked user of the configured issuer against Keycloak's admin API.

Per user (network first, then one short transaction through apps.identity.services_provider):
- 404, or `enabled: false` -> deprovisioned (roles emptied, API keys revoked, sessions ended; journalled
  `user.deprovisioned` with `via` = `provider-sync`);
- no mapped role -> deprovisioned the same way;
- roles -> synced (`user.roles_synced`, `via` = `provider-sync`, when they changed).
An admin API error for one user leaves that user as they are (logged); no token, no run. Off (returns None)
without OIDC_ADMIN_CLIENT_ID and OIDC_ADMIN_CLIENT_SECRET.
"""

import logging

from apps.identity import provider
from apps.identity.keycloak_admin import AdminApiUnavailable, KeycloakAdmin, admin_enabled
from apps.identity.models import ProviderIdentity
from apps.identity.roles_from_claims import Profile, roles_from_claims
from apps.identity.services_provider import SYNC_ACTOR, identity_user_deprovision, identity_user_sync

log = logging.getLogger(__name__)


def _profile(representation: dict, link: ProviderIdentity) -> Profile:
    def text(name):
        value = representation.get(name)
        return value if isinstance(value, str) else None

    return Profile(username=text("username") or link.preferred_username or link.user.username,
                   email=text("email"), first_name=text("firstName"), last_name=text("lastName"))


def provider_users_sync() -> dict | None:
    if not admin_enabled():
        return None
    try:
        admin = KeycloakAdmin()
    except AdminApiUnavailable as error:
        log.error("Provider sync skipped: %s", error)
        return {"error": str(error)}
    counts = {"checked": 0, "synced": 0, "deprovisioned": 0, "errors": 0}
    links = ProviderIdentity.objects.filter(issuer=provider.issuer(), subject__isnull=False).select_related("user")
    for link in links.order_by("pk").iterator():
        counts["checked"] += 1
        try:
            representation = admin.user(link.subject)
            claims = None
            if representation is not None and representation.get("enabled", True):
                claims = admin.role_claims(link.subject, clients=provider.role_clients())
        except AdminApiUnavailable as error:
            log.warning("Provider sync of %s skipped: %s", link.user.username, error)
            counts["errors"] += 1
            continue
        if representation is None or not representation.get("enabled", True):
            reason = "gone" if representation is None else "disabled"
            counts["deprovisioned"] += identity_user_deprovision(link_id=link.pk, reason=reason)
            continue
        roles = roles_from_claims(claims)
        if not roles:
            counts["deprovisioned"] += identity_user_deprovision(link_id=link.pk, reason="no-role")
            continue
        identity_user_sync(issuer=link.issuer, subject=link.subject, profile=_profile(representation, link),
                           roles=roles, via=SYNC_ACTOR)
        counts["synced"] += 1
    log.info("Provider sync: %s", counts)
    return counts
