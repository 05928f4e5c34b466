"""The writes of identity: users with roles (created locally or from the provider's claims), their link to the
provider (apps.identity.models.ProviderIdentity) and their API keys. Provider users: services_provider.py."""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.api.models import ApiKey, hash_api_key, new_api_key
from apps.api.roles import ADMIN, OPERATOR, ROLES, grantable_roles, user_roles
from apps.audit.services import audit_record
from apps.core.errors import Forbidden, NotFound, ValidationFailed

LAST_USED_RESOLUTION = timedelta(seconds=60)
STAFF_ROLES = frozenset({ADMIN, OPERATOR})


@transaction.atomic
def user_ensure_with_role(*, username: str, role: str, actor: str = "system", password: str | None = None):
    """Create the user if missing and put them in the role's group. Returns (user, created)."""
    if role not in ROLES:
        raise ValidationFailed(f"Unknown role '{role}'; use one of {', '.join(ROLES)}.", errors={"role": ["Unknown role."]})
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.is_staff = role in (ADMIN, OPERATOR)
        user.is_superuser = role == ADMIN
        user.save()
    group, _ = Group.objects.get_or_create(name=role)
    user.groups.add(group)
    if created:
        audit_record(event_type="user.created", actor=actor, resource_type="user", resource_id=username,
                     action="user.create", metadata={"role": role})
    return user, created


@transaction.atomic
def api_key_create(
    *, user, actor: str = "system", name: str = "", role: str | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key (shown once, never stored or journalled).

    `role` is at most the caller's: one of the roles `user` holds in this request (narrowed when the
    request itself came with a key), or one an admin grants (operator, instructor). None: the highest
    role held; a user without any role gets a blank role (the key can do nothing a role is needed for)."""
    held = user_roles(user)
    if role is None or role == "":
        role = next((r for r in ROLES if r in held), "")
    elif role not in ROLES:
        raise ValidationFailed(f"Unknown role '{role}'; use one of {', '.join(ROLES)}.", errors={"role": ["Unknown role."]})
    elif role not in grantable_roles(held):
        allowed = ", ".join(r for r in ROLES if r in grantable_roles(held)) or "none"
        raise Forbidden(f"A key's role is at most yours: you may make keys with role {allowed}, not {role}.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("expires_at must be in the future.", errors={"expires_at": ["Must be in the future."]})
    raw = new_api_key()
    api_key = ApiKey.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_api_key(raw), role=role,
                                    expires_at=expires_at)
    audit_record(event_type="api_key.created", actor=actor, resource_type="api_key", resource_id=api_key.prefix,
                 action="api_key.create", metadata={"user": user.get_username(), "name": name, "role": role,
                                                    "sha256": api_key.key_hash,
                                                    "expires_at": expires_at.isoformat() if expires_at else None})
    return api_key, raw


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: str) -> ApiKey:
    """Revoke one key (already revoked: nothing changes, nothing is journalled)."""
    now = timezone.now()
    if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now):
        api_key.revoked_at = now
        audit_record(event_type="api_key.revoked", actor=actor, resource_type="api_key", resource_id=api_key.prefix,
                     action="api_key.revoke", metadata={"user": api_key.user.get_username(), "sha256": api_key.key_hash})
    else:
        api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_key_revoke_by_sha256(*, user, sha256: str, actor: str) -> ApiKey:
    """The rerobots seed's `POST /revoke/:SHA256-of-token`: revoke that key of `user` (any other: NotFound)."""
    api_key = ApiKey.objects.select_related("user").filter(user=user, key_hash=sha256.lower()).first()
    if api_key is None:
        raise NotFound("No API key of yours has this SHA-256.")
    return api_key_revoke(api_key=api_key, actor=actor)


@transaction.atomic
def api_key_purge(*, user, actor: str) -> int:
    """Revoke every key of `user` still in force (the seed's `POST /purge`); returns how many."""
    keys = list(ApiKey.objects.select_related("user").filter(user=user, revoked_at__isnull=True))
    for api_key in keys:
        api_key_revoke(api_key=api_key, actor=actor)
    return len(keys)


def api_key_mark_used(*, api_key: ApiKey, now: datetime) -> None:
    """Stamp last_used_at, at most once per LAST_USED_RESOLUTION per key (one write a minute, not one a
    request; a compare-and-swap, so concurrent requests write once). Usage, not a change: not journalled."""
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    if ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now):
        api_key.last_used_at = now
