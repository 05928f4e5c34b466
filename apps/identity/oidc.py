"""mozilla-django-oidc's backend, fitted to LabManager: acts only on the OIDC callback.

- Endpoints and settings through apps.identity.provider (discovery), read lazily: Django builds
  backends for every authenticate()/get_user(), including the local login's.
- The ID token is checked by apps.identity.tokens (JWKS cache, RS256/ES256 only, iss, aud = the
  client id, exp, nonce), not by mozilla-django-oidc's own check (which skips the audience).
- The user is the account linked to the ID token's (iss, sub) (never found by `preferred_username` or
  e-mail: apps.identity.services_provider), created or updated from the claims, and their roles synced from the ID token, the userinfo answer and the access token when it is a JWT (Keycloak
  puts `realm_access`/`resource_access` there by default).
- The token answer's refresh token is handed to the callback view, which keeps it in the server-side session
  for the periodic re-check of the user (apps.identity.recheck).
"""

import logging

import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.identity import provider
from apps.identity.roles_from_claims import profile_from_claims, roles_from_claims
from apps.identity.models import ProviderIdentity
from apps.identity.services_provider import identity_user_sync
from apps.identity.tokens import InvalidToken, ProviderUnavailable, looks_like_jwt, validate_access_token, validate_id_token

log = logging.getLogger(__name__)


class OidcBackend(OIDCAuthenticationBackend):
    get_settings = staticmethod(provider.provider_setting)

    def __init__(self, *args, **kwargs):
        self.UserModel = get_user_model()

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: provider.endpoint("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: provider.endpoint("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: provider.endpoint("OIDC_OP_JWKS_ENDPOINT"))
    OIDC_RP_CLIENT_ID = property(lambda self: provider.client_id())
    OIDC_RP_CLIENT_SECRET = property(lambda self: provider.provider_setting("OIDC_RP_CLIENT_SECRET"))
    OIDC_RP_SIGN_ALGO = property(lambda self: provider.provider_setting("OIDC_RP_SIGN_ALGO"))
    OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        # Only the callback view passes a nonce; the local login's authenticate(username=, password=) is not ours.
        if request is None or "nonce" not in kwargs or not provider.oidc_enabled():
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, InvalidToken, ProviderUnavailable, ImproperlyConfigured,
                SuspiciousOperation, ValueError) as error:
            log.warning("OIDC login failed: %s", error)
            return None

    def get_token(self, payload):
        token_info = super().get_token(payload)
        self._refresh_token = token_info.get("refresh_token") if isinstance(token_info, dict) else None
        return token_info

    def verify_token(self, token, **kwargs):
        if not token:
            raise InvalidToken("The provider answered no ID token.")
        return validate_id_token(token, nonce=kwargs.get("nonce"))

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo answer is about another subject than the ID token.")
        claims = {**payload, **userinfo}
        roles = roles_from_claims(payload) | roles_from_claims(userinfo)
        if access_token and looks_like_jwt(access_token):
            try:
                roles |= roles_from_claims(validate_access_token(access_token))
            except (InvalidToken, ProviderUnavailable) as error:
                log.info("Roles not read from the login's access token: %s", error)
        user = identity_user_sync(issuer=provider.issuer(), subject=payload.get("sub"),
                                  profile=profile_from_claims(claims), roles=roles, via="oidc-login")
        user._oidc_refresh_token = getattr(self, "_refresh_token", None)  # for LoginCallback.login_success
        return user

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(provider_identity__in=ProviderIdentity.objects.filter(
            issuer=provider.issuer(), subject=claims.get("sub")))
