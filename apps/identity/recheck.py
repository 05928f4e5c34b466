"""Browser sessions of provider users are re-checked with the provider, at most once per
OIDC_ROLE_RECHECK_SECONDS per session (not per request).

At sign-in the callback keeps the provider's refresh token in the server-side session (never in a cookie,
never logged). When a request comes with a session whose last check is older than the bound, the session's
refresh token is exchanged at the token endpoint (client id and secret, as at login):

- the provider refuses it (`invalid_grant`: the user was deleted or disabled, their sessions revoked or the
  provider's session expired) -> the session ends;
- it answers -> the new access token fetches userinfo (which must be about the same subject), the roles are
  read from userinfo and from the access token when it is a JWT, as at login, and synced (journalled with
  `via` = `session-recheck`); no role left -> the session ends;
- the provider cannot be reached or answers anything else (5xx; `invalid_client`: LabManager's own
  credentials are wrong, which sign-ins show too) -> the session stays and the check is
  tried again after OIDC_ROLE_RECHECK_RETRY_SECONDS (the scheduled provider sync is the other line);
- a session without a refresh token (signed in before this existed, or a provider that issued none) cannot
  be re-checked -> it ends at its first check: the user signs in again.

HTTP requests are re-checked by apps.identity.middleware; a WebSocket (`/ws/events`, which Django's
middleware never sees) by `websocket_session_recheck` when it connects. Streams already open are ended by the
live hub when the journal says the user's roles changed or the user was deprovisioned (ACCESS_CHANGED_EVENTS
of apps.identity.services_provider; docs/security-identity.md#live-streams).
"""

import logging
from urllib.parse import quote

import httpx
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from apps.identity import provider
from apps.identity.models import ProviderIdentity
from apps.identity.roles_from_claims import profile_from_claims, roles_from_claims
from apps.identity.services_provider import identity_user_sync
from apps.identity.tokens import InvalidToken, ProviderUnavailable, looks_like_jwt, validate_access_token

log = logging.getLogger(__name__)

OIDC_BACKEND = "apps.identity.oidc.OidcBackend"
REFRESH_TOKEN_KEY = "oidc_refresh_token"  # noqa: S105 (a session key's name, not a secret)
CHECKED_AT_KEY = "identity_checked_at"  # epoch seconds of the session's last check with the provider
RETRY_SECONDS = 60


class Refused(Exception):
    """The provider refused the session's refresh token: the user or their session is gone."""


class Unavailable(Exception):
    """The provider could not be asked (network, 5xx, no endpoint)."""


def session_started(session, refresh_token: str | None) -> None:
    """At sign-in: keep the refresh token, and count the sign-in as a check."""
    if refresh_token:
        session[REFRESH_TOKEN_KEY] = refresh_token
    else:
        session.pop(REFRESH_TOKEN_KEY, None)
    session[CHECKED_AT_KEY] = timezone.now().timestamp()


def due(session) -> bool:
    """A provider session whose last check is older than the bound (reads only the session)."""
    if session.get(BACKEND_SESSION_KEY) != OIDC_BACKEND:
        return False
    checked = session.get(CHECKED_AT_KEY)
    return not isinstance(checked, (int, float)) or timezone.now().timestamp() - checked >= settings.OIDC_ROLE_RECHECK_SECONDS


def _refresh(refresh_token: str) -> dict:
    try:
        # client_secret_basic, the method every OAuth server supports (RFC 6749 2.3.1: form-encoded id and secret)
        response = httpx.post(provider.endpoint("OIDC_OP_TOKEN_ENDPOINT"),
                              data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                              auth=(quote(provider.client_id(), safe=""), quote(settings.OIDC_RP_CLIENT_SECRET, safe="")),
                              **provider.http_options())
    except (httpx.HTTPError, ImproperlyConfigured) as error:
        raise Unavailable(str(error)) from error
    if response.status_code == 200:
        try:
            return response.json()
        except ValueError as error:
            raise Unavailable("the token endpoint answered no JSON") from error
    try:
        reason = response.json().get("error", "")
    except (ValueError, AttributeError):
        reason = ""
    if response.status_code == 400 and reason == "invalid_grant":  # the user or their session is gone
        raise Refused("the provider refused the refresh token (invalid_grant)")
    # Anything else (invalid_client: our credentials; 5xx) is not about the user: try again later.
    raise Unavailable(f"the token endpoint answered {response.status_code} {reason}".strip())


def _userinfo(access_token: str) -> dict:
    try:
        response = httpx.get(provider.endpoint("OIDC_OP_USER_ENDPOINT"),
                             headers={"Authorization": f"Bearer {access_token}"}, **provider.http_options())
    except (httpx.HTTPError, ImproperlyConfigured) as error:
        raise Unavailable(str(error)) from error
    if response.status_code in (401, 403):
        raise Refused(f"userinfo answered {response.status_code}")
    if response.status_code != 200:
        raise Unavailable(f"userinfo answered {response.status_code}")
    try:
        return response.json()
    except ValueError as error:
        raise Unavailable("userinfo answered no JSON") from error


def _end(request, why: str) -> None:
    log.info("Provider session of %s ended at its re-check: %s", request.user.get_username(), why)
    auth.logout(request)


def session_recheck(request) -> None:
    """Re-check the provider session of `request` if due; may end it (the request goes on anonymous)."""
    session = request.session
    if not provider.oidc_enabled() or not due(session) or not request.user.is_authenticated:
        return
    now = timezone.now().timestamp()
    link = ProviderIdentity.objects.filter(user_id=request.user.pk, subject__isnull=False).first()
    refresh_token = session.get(REFRESH_TOKEN_KEY)
    if link is None or not refresh_token:
        return _end(request, "no refresh token kept" if link else "no link to the provider")
    try:
        tokens = _refresh(refresh_token)
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise Unavailable("the token endpoint answered no access token")
        userinfo = _userinfo(access_token)
    except Refused as error:
        return _end(request, str(error))
    except Unavailable as error:
        log.warning("Provider session re-check of %s postponed: %s", request.user.get_username(), error)
        session[CHECKED_AT_KEY] = now - max(0, settings.OIDC_ROLE_RECHECK_SECONDS - RETRY_SECONDS)
        return None
    if userinfo.get("sub") != link.subject:
        return _end(request, "userinfo is about another subject")
    roles = roles_from_claims(userinfo)
    if looks_like_jwt(access_token):
        try:
            roles |= roles_from_claims(validate_access_token(access_token))
        except (InvalidToken, ProviderUnavailable) as error:
            log.info("Roles not read from the refreshed access token: %s", error)
    identity_user_sync(issuer=link.issuer, subject=link.subject, profile=profile_from_claims(userinfo),
                       roles=roles, via="session-recheck")
    if not roles:
        return _end(request, "no LabManager role left")
    request.user._labmanager_roles = roles  # this request's user object (apps.api.roles.user_roles' cache)
    if isinstance(tokens.get("refresh_token"), str) and tokens["refresh_token"]:
        session[REFRESH_TOKEN_KEY] = tokens["refresh_token"]  # rotated by the provider
    if isinstance(tokens.get("id_token"), str) and tokens["id_token"]:
        session["oidc_id_token"] = tokens["id_token"]  # the id_token_hint of the logout
    session[CHECKED_AT_KEY] = now
    return None


class _ScopeRequest:
    """What session_recheck (and django.contrib.auth.logout) read of a request, over a WebSocket's scope
    (Channels' AuthMiddlewareStack put the session and the user there)."""

    def __init__(self, scope):
        self.session = scope["session"]
        self.user = scope["user"]
        self.META = {}


def websocket_session_recheck(scope) -> None:
    """`session_recheck` for a WebSocket at connect (synchronous: run it in a thread). A session that ends is
    flushed and the socket goes on anonymous (scope["user"]); one that stays is saved with its new check time
    and rotated refresh token (no middleware saves a WebSocket's session)."""
    if "session" not in scope or "user" not in scope:
        return
    request = _ScopeRequest(scope)
    session_recheck(request)
    if isinstance(request.user, AnonymousUser):  # ended: auth.logout flushed the session
        scope["user"] = request.user
    elif request.session.modified:
        request.session.save()
