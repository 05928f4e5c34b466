"""The writes of the provider's users: found by (issuer, subject), created, their roles synced, deprovisioned.

A provider's user is the account linked to their (issuer, subject) (apps.identity.models.ProviderIdentity),
never the account that happens to carry their `preferred_username`: a provider can hand any name to anyone.
A new subject whose name is taken by an account that is not theirs (a local account, or another subject's)
gets an account of its own named `<name>@<issuer host>` (docs/security-identity.md#accounts).

The provider is the authority for its users: roles it no longer grants are removed, `is_superuser` follows
`admin`, `is_staff` admin or operator. A user the provider no longer knows, or who holds no role, is
deprovisioned: roles emptied, API keys revoked, browser sessions ended.
"""

from datetime import timedelta
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.api.models import ApiKey
from apps.api.roles import ADMIN, ROLES
from apps.audit.services import audit_record
from apps.identity.models import ProviderIdentity
from apps.identity.roles_from_claims import USERNAME_MAX, Profile
from apps.identity.services import STAFF_ROLES, api_key_revoke

SYNC_ACTOR = "provider-sync"
# Journal events after which a user's live streams (SSE, WebSocket) end: their rights were read when they
# connected (apps.events.hub reads the journal in every ASGI process, whichever process made the change).
ACCESS_CHANGED_EVENTS = frozenset({"user.roles_synced", "user.deprovisioned"})


ACTIONS = {"user.created": "user.create", "user.linked": "user.link", "user.roles_synced": "user.roles_sync",
           "user.deprovisioned": "user.deprovision"}


def _journal_user(event_type: str, user, metadata: dict) -> None:
    audit_record(event_type=event_type, actor="system", resource_type="user", resource_id=user.username,
                 action=ACTIONS[event_type], metadata=metadata)


def _username_for(name: str, issuer: str) -> str:
    """`name` if free, else `<name>@<issuer host>` (then `-2`, `-3`, ...): never an existing account."""
    User = get_user_model()
    if not User.objects.filter(username=name).exists():
        return name
    host = urlparse(issuer).hostname or "provider"
    for n in range(1, 1000):
        suffix = f"@{host}" + (f"-{n}" if n > 1 else "")
        candidate = name[:USERNAME_MAX - len(suffix)] + suffix
        if not User.objects.filter(username=candidate).exists():
            return candidate
    raise ValueError(f"No free username for {name!r}.")


def pending_linkable_at_sign_in() -> Q:
    """The accounts of migration 0003 (no subject yet) that a sign-in with their username may still link:
    not deprovisioned (the provider sync found their user gone or someone else under the name) and linkable
    for OIDC_PENDING_LINK_DAYS after the migration made them (0: only the provider sync links them). Past
    that, a sign-in with the name gets an account of its own: a name freed at the provider and taken by a new
    user never hands over the old account (docs/security-identity.md#accounts)."""
    days = settings.OIDC_PENDING_LINK_DAYS
    if days <= 0:
        return Q(pk__in=[])
    return Q(subject__isnull=True, deprovisioned_at__isnull=True,
             created_at__gte=timezone.now() - timedelta(days=days))


@transaction.atomic
def identity_pending_link(*, link_id: int, issuer: str, subject: str, via: str = SYNC_ACTOR) -> str | None:
    """The provider sync found the user of a pending account (migration 0003) by its exact username, created at
    the provider before the account was: link it to (issuer, subject), journalled `user.linked`. Returns the
    subject the account is linked to now (a sign-in may have linked it meanwhile), or None when `subject`
    already has another account (nothing changed)."""
    link = ProviderIdentity.objects.select_for_update().select_related("user").get(pk=link_id)
    issuer = issuer.rstrip("/")
    if link.subject is not None:
        return link.subject
    if ProviderIdentity.objects.filter(issuer=issuer, subject=subject).exists():
        return None
    link.issuer, link.subject = issuer, subject
    link.save(update_fields=["issuer", "subject"])
    _journal_user("user.linked", link.user, {"via": via, "issuer": issuer, "subject": subject})
    return subject


def _link(*, issuer: str, subject: str, profile: Profile, roles: frozenset[str], via: str) -> ProviderIdentity:
    """The link of (issuer, subject), made now if new: an account the provider created before accounts were
    linked (migration 0003) with this username, else a new account."""
    link = ProviderIdentity.objects.select_for_update().select_related("user").filter(
        issuer=issuer, subject=subject).first()
    if link is not None:
        return link
    pending = ProviderIdentity.objects.select_for_update().select_related("user").filter(
        pending_linkable_at_sign_in(), user__username=profile.username).first()
    if pending is not None:
        pending.issuer, pending.subject = issuer, subject
        pending.save(update_fields=["issuer", "subject"])
        _journal_user("user.linked", pending.user, {"via": via, "issuer": issuer, "subject": subject})
        return pending
    User = get_user_model()
    username = _username_for(profile.username, issuer)
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    link = ProviderIdentity.objects.create(user=user, issuer=issuer, subject=subject,
                                           preferred_username=profile.username)
    metadata = {"via": via, "roles": sorted(roles), "issuer": issuer, "subject": subject}
    if username != profile.username:
        metadata["username_taken"] = profile.username  # the provider's name belongs to another account
    _journal_user("user.created", user, metadata)
    return link


def _roles_apply(user, roles: frozenset[str]) -> tuple[set[str], set[str]]:
    """Make the user's role groups exactly `roles`; returns (added, removed). Other groups stay."""
    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    added, removed = roles - current, current - roles
    if added:
        user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in sorted(added)))
    if removed:
        user.groups.remove(*Group.objects.filter(name__in=removed))
    user._labmanager_roles = frozenset(roles)  # apps.api.roles.user_roles' per-request cache
    return added, removed


@transaction.atomic
def _sync(*, issuer, subject, profile, roles, via):
    link = _link(issuer=issuer, subject=subject, profile=profile, roles=roles, via=via)
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=link.user_id)
    wanted = {
        "email": profile.email,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "is_superuser": ADMIN in roles,
        "is_staff": bool(roles & STAFF_ROLES),
    }
    changed = [name for name, value in wanted.items() if value is not None and getattr(user, name) != value]
    for name in changed:
        setattr(user, name, wanted[name])
    if changed:
        user.save(update_fields=changed)
    added, removed = _roles_apply(user, roles)
    link.preferred_username = profile.username[:255]
    link.last_checked_at = timezone.now()
    fields = ["preferred_username", "last_checked_at"]
    if roles and link.deprovisioned_at is not None:
        link.deprovisioned_at = None
        fields.append("deprovisioned_at")
    link.save(update_fields=fields)
    if added or removed:
        _journal_user("user.roles_synced", user, {"via": via, "added": sorted(added), "removed": sorted(removed)})
    return user


def identity_user_sync(*, issuer: str, subject: str, profile: Profile, roles: frozenset[str], via: str):
    """The account of the provider's user (issuer, subject), created if new; profile fields and role groups
    made what the provider says. `via` ("oidc-login", "bearer", "session-recheck", "provider-sync") goes into
    the journal. Two first sign-ins of one subject at once: the second finds the first's link."""
    if not isinstance(subject, str) or not subject:
        raise ValueError("The claims carry no subject (sub).")
    issuer = issuer.rstrip("/")
    try:
        return _sync(issuer=issuer, subject=subject, profile=profile, roles=roles, via=via)
    except IntegrityError:  # another request linked this subject (or took the username) meanwhile
        return _sync(issuer=issuer, subject=subject, profile=profile, roles=roles, via=via)


@transaction.atomic
def identity_user_deprovision(*, link_id: int, reason: str, via: str = SYNC_ACTOR) -> bool:
    """The provider no longer knows the user (`reason` "gone", "disabled") or grants no role ("no-role"):
    role groups emptied (is_superuser, is_staff off), every API key in force revoked (journalled), every
    browser session ended (a new unusable password changes the session hash Django checks on each request).
    Journalled as `user.deprovisioned` the first time; again only when something was left to take away.
    Returns whether anything changed."""
    link = ProviderIdentity.objects.select_for_update().get(pk=link_id)
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=link.user_id)
    now = timezone.now()
    _, removed = _roles_apply(user, frozenset())
    keys = list(ApiKey.objects.select_related("user").filter(user=user, revoked_at__isnull=True))
    for api_key in keys:
        api_key_revoke(api_key=api_key, actor=via)
    first = link.deprovisioned_at is None
    if user.is_superuser or user.is_staff or first or removed or keys:
        user.is_superuser = user.is_staff = False
        user.set_unusable_password()  # ends the user's sessions (django.contrib.auth.get_user's hash check)
        user.save(update_fields=["is_superuser", "is_staff", "password"])
    link.last_checked_at = now
    if first:
        link.deprovisioned_at = now
    link.save(update_fields=["last_checked_at", "deprovisioned_at"])
    if removed:
        _journal_user("user.roles_synced", user, {"via": via, "added": [], "removed": sorted(removed)})
    if first or removed or keys:
        _journal_user("user.deprovisioned", user, {"via": via, "reason": reason, "roles_removed": sorted(removed),
                                                   "api_keys_revoked": [k.prefix for k in keys]})
        return True
    return False

