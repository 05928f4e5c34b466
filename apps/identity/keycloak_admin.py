"""A thin gateway over Keycloak's admin REST API, for the scheduled provider sync: plain data, no ORM.

Credentials: the client credentials grant of a service-account client (OIDC_ADMIN_CLIENT_ID/SECRET) at the
realm's token endpoint; the service account needs the `realm-management` client roles `view-users` and
`view-clients`. The admin API lives at `<base>/admin/realms/<realm>` for the issuer `<base>/realms/<realm>`.
"""

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.identity import provider


class AdminApiUnavailable(Exception):
    """The admin API could not be asked or answered an error (not a 404 for a user)."""


def admin_enabled() -> bool:
    return provider.oidc_enabled() and bool(settings.OIDC_ADMIN_CLIENT_ID and settings.OIDC_ADMIN_CLIENT_SECRET)


def admin_base() -> str:
    issuer = provider.issuer()
    head, sep, realm = issuer.rpartition("/realms/")
    if not sep or not realm:
        raise ImproperlyConfigured(f"The issuer {issuer} is not a Keycloak realm (…/realms/<realm>).")
    return f"{head}/admin/realms/{realm}"


class KeycloakAdmin:
    def __init__(self):
        try:
            response = httpx.post(provider.endpoint("OIDC_OP_TOKEN_ENDPOINT"), data={
                "grant_type": "client_credentials", "client_id": settings.OIDC_ADMIN_CLIENT_ID,
                "client_secret": settings.OIDC_ADMIN_CLIENT_SECRET}, **provider.http_options())
            response.raise_for_status()
            token = response.json()["access_token"]
        except (httpx.HTTPError, ValueError, KeyError, ImproperlyConfigured) as error:
            raise AdminApiUnavailable(f"no admin API token: {error}") from error
        self.base = admin_base()
        self.headers = {"Authorization": f"Bearer {token}"}
        self._client_ids: dict[str, str | None] = {}

    def _get(self, path: str, **params):
        try:
            response = httpx.get(self.base + path, params=params or None, headers=self.headers, **provider.http_options())
        except httpx.HTTPError as error:
            raise AdminApiUnavailable(f"GET {path}: {error}") from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise AdminApiUnavailable(f"GET {path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as error:
            raise AdminApiUnavailable(f"GET {path} answered no JSON") from error

    def user(self, user_id: str) -> dict | None:
        """The user representation (`username`, `enabled`, `email`, ...); None when Keycloak has no such user."""
        return self._get(f"/users/{user_id}")

    def user_by_username(self, username: str) -> dict | None:
        """The user whose username is exactly `username` (Keycloak keeps usernames in lower case), else None."""
        found = self._get("/users", username=username, exact="true") or []
        if not isinstance(found, list):
            raise AdminApiUnavailable("GET /users answered no list")
        matches = [user for user in found if isinstance(user, dict) and isinstance(user.get("username"), str)
                   and user["username"].lower() == username.lower() and isinstance(user.get("id"), str)]
        if len(matches) > 1:
            raise AdminApiUnavailable(f"GET /users found {len(matches)} users named {username!r}")
        return matches[0] if matches else None

    def _client_uuid(self, client_id: str) -> str | None:
        if client_id not in self._client_ids:
            found = self._get("/clients", clientId=client_id) or []
            self._client_ids[client_id] = found[0]["id"] if found and isinstance(found[0], dict) else None
        return self._client_ids[client_id]

    def role_claims(self, user_id: str, *, clients: tuple[str, ...]) -> dict:
        """The user's effective roles in the shape of a token's claims: `realm_access.roles` (composite: also
        through groups and composite roles), `resource_access.<client>.roles` and `groups` (full paths)."""
        realm = self._get(f"/users/{user_id}/role-mappings/realm/composite") or []
        resources = {}
        for client in clients:
            uuid = self._client_uuid(client)
            if uuid:
                roles = self._get(f"/users/{user_id}/role-mappings/clients/{uuid}/composite") or []
                resources[client] = {"roles": [role.get("name") for role in roles if isinstance(role, dict)]}
        groups = self._get(f"/users/{user_id}/groups") or []
        return {"realm_access": {"roles": [role.get("name") for role in realm if isinstance(role, dict)]},
                "resource_access": resources,
                "groups": [group.get("path") for group in groups if isinstance(group, dict)]}
