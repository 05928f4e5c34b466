"""The one write of identity: a user created or updated from the provider's claims, roles synced."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from apps.audit.services import audit_record
from apps.api.roles import ADMIN, OPERATOR
from apps.identity.roles_from_claims import ROLES, Profile

STAFF_ROLES = frozenset({ADMIN, OPERATOR})


@transaction.atomic
def identity_user_sync(*, profile: Profile, roles: frozenset[str], via: str):
    """Create or update the user `profile.username`; make their role groups exactly `roles`.

    The provider is the authority: roles it no longer grants are removed, `is_superuser` follows `admin`
    and `is_staff` admin or operator (as apps.identity.accounts.user_ensure_with_role sets them). Groups
    that are not roles are left alone. `via` ("oidc-login", "bearer") goes into the audit record.
    """
    User = get_user_model()
    user, created = User.objects.select_for_update().get_or_create(username=profile.username)
    changed = []
    if created:
        user.set_unusable_password()
        changed.append("password")
    wanted = {
        "email": profile.email,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "is_superuser": ADMIN in roles,
        "is_staff": bool(roles & STAFF_ROLES),
    }
    for name, value in wanted.items():
        if value is not None and getattr(user, name) != value:
            setattr(user, name, value)
            changed.append(name)
    if changed:
        user.save(update_fields=None if created else changed)

    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    added, removed = roles - current, current - roles
    if added:
        user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in sorted(added)))
    if removed:
        user.groups.remove(*Group.objects.filter(name__in=removed))
    user._labmanager_roles = frozenset(roles)  # apps.api.roles.user_roles' per-request cache

    if created:
        audit_record(event_type="user.created", actor="system", resource_type="user", resource_id=user.username,
                     action="user.create", metadata={"via": via, "roles": sorted(roles)})
    if added or removed:
        audit_record(event_type="user.roles_synced", actor="system", resource_type="user", resource_id=user.username,
                     action="user.roles_sync", metadata={"via": via, "added": sorted(added), "removed": sorted(removed)})
    return user
