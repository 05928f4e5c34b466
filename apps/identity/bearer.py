"""`Authorization: Bearer <jwt>` on the API: a provider's access token validated locally.

After ApiKeyAuthentication (which leaves JWT-shaped credentials alone) and before the session. The token
is checked against the cached JWKS (apps.identity.tokens): no provider call per request. The user is the
account linked to the token's (iss, sub) (apps.identity.services_provider), created or updated from the claims and their roles synced when the claims differ from what this process
last synced for them; otherwise one query loads the user, as for an API key. The roles of the request are
the token's. A valid token without a mapped role gets 403; an invalid one 401.
"""

import threading
import time

from django.contrib.auth import get_user_model
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, status

from apps.identity import provider
from apps.identity.roles_from_claims import profile_from_claims, roles_from_claims
from apps.identity.services_provider import identity_user_sync
from apps.identity.tokens import InvalidToken, ProviderUnavailable, looks_like_jwt, validate_access_token

SYNC_TTL_SECONDS = 300  # a process re-syncs a token user at least this often
SYNC_MAX_ENTRIES = 10_000
NO_ROLE = "Your identity carries no LabManager role (admin, operator or instructor)."

_synced: dict[tuple[str, str], tuple[int, tuple, float]] = {}  # (iss, sub) -> (user pk, fingerprint, monotonic expiry)
_synced_lock = threading.Lock()


class IdentityProviderUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The identity provider's signing keys cannot be fetched; try again later."


class BearerToken:
    """`request.auth` of a JWT-authenticated request."""

    def __init__(self, claims: dict, roles: frozenset[str]):
        self.claims = claims
        self.roles = roles

    def __repr__(self):
        return f"BearerToken(sub={self.claims.get('sub')!r}, roles={sorted(self.roles)})"


def bearer_credentials(headers) -> str | None:
    scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
    token = credentials.strip()
    if scheme.lower() == "bearer" and token and looks_like_jwt(token):
        return token
    return None


def forget_synced_users() -> None:
    with _synced_lock:
        _synced.clear()


def _user_for(claims: dict, roles: frozenset[str]):
    profile = profile_from_claims(claims)
    key = (provider.issuer(), claims.get("sub"))
    fingerprint = (profile, roles)
    now = time.monotonic()
    entry = _synced.get(key)
    user = None
    if entry is not None and entry[1] == fingerprint and entry[2] > now:
        user = get_user_model().objects.filter(pk=entry[0]).first()
    if user is None:
        user = identity_user_sync(issuer=key[0], subject=key[1], profile=profile, roles=roles, via="bearer")
        with _synced_lock:
            if len(_synced) >= SYNC_MAX_ENTRIES:
                _synced.clear()
            _synced[key] = (user.pk, fingerprint, now + SYNC_TTL_SECONDS)
    user._labmanager_roles = roles
    return user


def user_for_bearer_token(token: str):
    """(user, BearerToken) for a valid access token; raises DRF's AuthenticationFailed (401),
    PermissionDenied (403, no role) or IdentityProviderUnavailable (503)."""
    if not provider.oidc_enabled():
        raise exceptions.AuthenticationFailed("Bearer JWTs are not accepted: OIDC is not configured on this server.")
    try:
        claims = validate_access_token(token)
    except InvalidToken as error:
        raise exceptions.AuthenticationFailed(str(error)) from None
    except ProviderUnavailable:
        raise IdentityProviderUnavailable() from None
    roles = roles_from_claims(claims)
    if not roles:
        raise exceptions.PermissionDenied(NO_ROLE)
    try:
        user = _user_for(claims, roles)
    except ValueError as error:
        raise exceptions.AuthenticationFailed(str(error)) from None
    if not user.is_active:
        raise exceptions.AuthenticationFailed("The user of this token is inactive.")
    return user, BearerToken(claims, roles)


class BearerJwtAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = bearer_credentials(request.headers)
        if token is None:
            return None
        return user_for_bearer_token(token)

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class BearerJwtScheme(OpenApiAuthenticationExtension):
    target_class = "apps.identity.bearer.BearerJwtAuthentication"
    name = "OidcBearer"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token of the OpenID provider (Keycloak), RS256 or ES256, validated locally "
                           "against the provider's JWKS. Roles come from its realm/client roles and groups.",
        }
