"""From a provider's claims to a LabManager user: who (profile) and which roles.

Role names are read from Keycloak's three places: `realm_access.roles`, `resource_access.<client>.roles`
(for each client in OIDC_ROLE_CLIENTS, default the client id) and `groups` (with or without the leading
`/` of Keycloak's full group paths). Each name found in settings.OIDC_ROLE_MAP gives the mapped role
(admin, operator, instructor); every other name is ignored. No mapped name: no role, no access.
"""

from dataclasses import dataclass

from django.conf import settings

from apps.api.roles import ADMIN, INSTRUCTOR, OPERATOR
from apps.identity import provider

ROLES = frozenset({ADMIN, OPERATOR, INSTRUCTOR})
USERNAME_MAX = 150  # django.contrib.auth's username length


@dataclass(frozen=True)
class Profile:
    username: str
    email: str | None
    first_name: str | None
    last_name: str | None


def _strings(value) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def role_names(claims: dict, *, clients: tuple[str, ...]) -> set[str]:
    """Every role and group name the claims carry (mapped or not)."""
    names: set[str] = set()
    realm = claims.get("realm_access")
    if isinstance(realm, dict):
        names.update(_strings(realm.get("roles")))
    resources = claims.get("resource_access")
    if isinstance(resources, dict):
        for client in clients:
            access = resources.get(client)
            if isinstance(access, dict):
                names.update(_strings(access.get("roles")))
    for group in _strings(claims.get("groups")):
        names.add(group)
        names.add(group.lstrip("/"))
    return names


def roles_from_claims(claims: dict) -> frozenset[str]:
    role_map = settings.OIDC_ROLE_MAP
    names = role_names(claims, clients=provider.role_clients())
    return frozenset(role_map[name] for name in names if role_map.get(name) in ROLES)


def profile_from_claims(claims: dict) -> Profile:
    """`preferred_username` (else `sub`), email and names; None where the claims say nothing."""
    username = claims.get("preferred_username") or claims.get("sub")
    if not isinstance(username, str) or not username.strip():
        raise ValueError("The claims carry neither preferred_username nor sub.")

    def text(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) else None

    return Profile(username=username.strip()[:USERNAME_MAX], email=text("email"),
                   first_name=text("given_name"), last_name=text("family_name"))
