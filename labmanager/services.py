"""Writes of the shared plumbing: users with roles and their API keys."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from labmanager.api.roles import ADMIN, INSTRUCTOR, OPERATOR
from labmanager.errors import ValidationFailed
from labmanager.models import ApiKey, hash_api_key, new_api_key

ROLES = (ADMIN, OPERATOR, INSTRUCTOR)


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
def api_key_create(*, user, actor: str = "system", name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns the row and the raw key (shown once, never stored)."""
    raw = new_api_key()
    api_key = ApiKey.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_api_key(raw))
    audit_record(event_type="api_key.created", actor=actor, resource_type="api_key", resource_id=api_key.prefix,
                 action="api_key.create", metadata={"user": user.get_username(), "name": name})
    return api_key, raw


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: str) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(event_type="api_key.revoked", actor=actor, resource_type="api_key", resource_id=api_key.prefix,
                     action="api_key.revoke", metadata={"user": api_key.user.get_username()})
    return api_key
