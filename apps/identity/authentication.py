"""API authentication: API keys (X-API-Key, or Authorization: Bearer lm_...) and the browser session.

A key authenticates its user with the key's role alone (apps.api.roles.narrow_roles). Unknown,
revoked and expired keys get 401 problem+json. Bearer credentials shaped like a JWT are left to
apps.identity.bearer. The key is never logged: only its prefix reaches the journal (as the actor).
"""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from apps.api.roles import narrow_roles
from apps.identity.tokens import looks_like_jwt
from apps.api.models import ApiKey, hash_api_key
from apps.identity.services import api_key_mark_used


def api_key_from_headers(headers) -> str | None:
    raw = headers.get("X-API-Key")
    if raw:
        return raw.strip()
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    raw = credentials.strip()
    if scheme.lower() != "bearer" or not raw or looks_like_jwt(raw):  # a provider's access token: not ours
        return None
    return raw


def user_for_api_key(raw: str):
    """(user, ApiKey) for a key in force; AuthenticationFailed (401) otherwise."""
    api_key = ApiKey.objects.select_related("user").filter(key_hash=hash_api_key(raw)).first()
    if api_key is None:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if api_key.revoked_at is not None:
        raise exceptions.AuthenticationFailed("This API key was revoked.")
    now = timezone.now()
    if api_key.is_expired(now):
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not api_key.user.is_active:
        raise exceptions.AuthenticationFailed("The user of this API key is inactive.")
    narrow_roles(api_key.user, api_key.role)
    api_key_mark_used(api_key=api_key, now=now)
    return api_key.user, api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw = api_key_from_headers(request.headers)
        return user_for_api_key(raw) if raw else None

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.identity.authentication.ApiKeyAuthentication"
    name = ["ApiKeyHeader", "BearerAuth"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            {"type": "http", "scheme": "bearer", "description": "An API key (a provider's JWT: see OidcBearer)."},
        ]
