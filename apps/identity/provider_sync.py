"""The scheduled provider sync: every linked user of the configured issuer against Keycloak's admin API.

Per user (network first, then one short transaction through apps.identity.services_provider):
- an account of migration 0003 (no subject yet) is looked up by its exact username; found, and created at
  the provider before the account -> linked (`user.linked`), then as below; not found -> deprovisioned
  (`reason` = `gone`); found but created later (someone else took the freed name) -> deprovisioned
  (`name-reused`). Either way a deprovisioned pending account is never linked afterwards;
- 404, or `enabled: false` -> deprovisioned (roles emptied, API keys revoked, sessions ended; journalled
  `user.deprovisioned` with `via` = `provider-sync`);
- no mapped role -> deprovisioned the same way;
- roles -> synced (`user.roles_synced`, `via` = `provider-sync`, when they changed).
An admin API error for one user leaves that user as they are (logged); no token, no run. Off (returns None)
without OIDC_ADMIN_CLIENT_ID and OIDC_ADMIN_CLIENT_SECRET.
"""

import logging

from django.db.models import Q

from apps.identity import provider
from apps.identity.keycloak_admin import AdminApiUnavailable, KeycloakAdmin, admin_enabled
from apps.identity.models import ProviderIdentity
from apps.identity.roles_from_claims import Profile, roles_from_claims
from apps.identity.services_provider import (SYNC_ACTOR, identity_pending_link, identity_user_deprovision,
                                             identity_user_sync)

log = logging.getLogger(__name__)


def _profile(representation: dict, link: ProviderIdentity) -> Profile:
    def text(name):
        value = representation.get(name)
        return value if isinstance(value, str) else None

    return Profile(username=text("username") or link.preferred_username or link.user.username,
                   email=text("email"), first_name=text("firstName"), last_name=text("lastName"))


def _pending_subject(admin: KeycloakAdmin, link: ProviderIdentity) -> tuple[str | None, str]:
    """An account of migration 0003 (its subject was never recorded): its provider user is the one of its exact
    username, if Keycloak created that user before LabManager created the account (a user created later took a
    freed name and is someone else). Returns (subject, "") once linked, else (None, the deprovision reason)."""
    found = admin.user_by_username(link.user.username)
    if found is None:
        return None, "gone"
    created = found.get("createdTimestamp")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        raise AdminApiUnavailable(f"the user {link.user.username!r} has no createdTimestamp")
    if created / 1000 > link.user.date_joined.timestamp():
        return None, "name-reused"
    subject = identity_pending_link(link_id=link.pk, issuer=provider.issuer(), subject=found["id"])
    if subject is None:
        return None, "name-reused"  # the subject already has an account of its own
    return subject, ""


def provider_users_sync() -> dict | None:
    if not admin_enabled():
        return None
    try:
        admin = KeycloakAdmin()
    except AdminApiUnavailable as error:
        log.error("Provider sync skipped: %s", error)
        return {"error": str(error)}
    counts = {"checked": 0, "synced": 0, "deprovisioned": 0, "errors": 0}
    links = ProviderIdentity.objects.filter(
        Q(issuer=provider.issuer(), subject__isnull=False) | Q(subject__isnull=True, deprovisioned_at__isnull=True)
    ).select_related("user")
    for link in links.order_by("pk").iterator():
        counts["checked"] += 1
        if link.subject is None:
            try:
                subject, reason = _pending_subject(admin, link)
            except AdminApiUnavailable as error:
                log.warning("Provider sync of %s (not linked yet) skipped: %s", link.user.username, error)
                counts["errors"] += 1
                continue
            if subject is None:
                counts["deprovisioned"] += identity_user_deprovision(link_id=link.pk, reason=reason)
                continue
            link.issuer, link.subject = provider.issuer(), subject
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
