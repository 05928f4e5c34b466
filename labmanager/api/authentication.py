"""API authentication: API keys (X-API-Key or Authorization: Bearer) and the browser session."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from labmanager.models import ApiKey, hash_api_key

LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw = request.headers.get("X-API-Key")
        if not raw:
            header = request.headers.get("Authorization", "")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "bearer" or not credentials.strip():
                return None
            raw = credentials.strip()
        try:
            api_key = ApiKey.objects.select_related("user").get(key_hash=hash_api_key(raw), revoked_at__isnull=True)
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("The user of this API key is inactive.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            # One write a minute per key at most, not one per request.
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.user, api_key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "labmanager.api.authentication.ApiKeyAuthentication"
    name = ["ApiKeyHeader", "BearerAuth"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            {"type": "http", "scheme": "bearer", "description": "An API key (or, later, a Keycloak access token)."},
        ]
