"""Browser login through the OpenID provider, logout, and who am I.

GET  /api/auth/login     starts the authorization-code flow (PKCE S256, state, nonce); `?next=` is kept.
                         OIDC off (no OIDC_ISSUER): redirects to the local login page /accounts/login/.
                         LOGIN_RATE_LIMIT per address (apps/identity/urls.py).
GET  /api/auth/callback  the provider's redirect: signs the user in (session cookie), or sends a user
                         without a LabManager role to /accounts/no-access/ (403 page), or a failed login
                         back to /accounts/login/?sso_failed=1.
POST /api/auth/logout    ends the Django session, then RP-initiated logout at the provider
                         (end_session_endpoint with id_token_hint and post_logout_redirect_uri). POST only,
                         with the CSRF token (Django's middleware): a GET is 405 and ends nothing, so a
                         link or an image on another page cannot log anyone out.
GET  /api/auth/me        the caller: username, roles and how they authenticated.
"""

import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import views as auth_views
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.views.generic import View
from drf_spectacular.utils import extend_schema, inline_serializer
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView, OIDCLogoutView
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from apps.api.permissions import SIGNED_IN, requires
from apps.api.roles import user_roles
from apps.identity import provider, recheck
from apps.identity.bearer import BearerToken
from apps.api.middleware import problem_response
from apps.api.models import ApiKey

log = logging.getLogger(__name__)


def _local_login_url(request) -> str:
    url = resolve_url(settings.LOGIN_URL)
    next_url = request.GET.get("next")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


class LoginStart(OIDCAuthenticationRequestView):
    get_settings = staticmethod(provider.provider_setting)

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # endpoints are resolved in get(), not when the view is built

    def get(self, request):
        if not provider.oidc_enabled():
            return redirect(_local_login_url(request))
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider.endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ImproperlyConfigured as error:
            log.error("OIDC login unavailable: %s", error)
            response = problem_response(request, 503, detail="The identity provider cannot be reached; try again later.")
            response["Retry-After"] = "30"  # every 503 of the API says when to try again
            return response
        self.OIDC_RP_CLIENT_ID = provider.client_id()
        return super().get(request)


class LoginCallback(OIDCAuthenticationCallbackView):
    get_settings = staticmethod(provider.provider_setting)

    def get(self, request):
        if not provider.oidc_enabled():
            return redirect(_local_login_url(request))
        if "error" in request.GET:
            # The provider refused or the user cancelled. mozilla-django-oidc would log the browser out here, on
            # a GET anyone can link to (issue 19, item 10): the session stays, the sign-in simply failed.
            # (The library logs out for its session-refresh middleware, which this project does not use.) The
            # flow's state is spent.
            states = request.session.get("oidc_states") or {}
            if request.GET.get("state") in states:
                del states[request.GET["state"]]
                request.session["oidc_states"] = states
            log.info("OIDC sign-in failed at the provider: %s", request.GET.get("error", "")[:100])
            return self.login_failure()
        try:
            return super().get(request)
        except SuspiciousOperation as error:  # a state this browser never started (replay, another tab)
            log.warning("OIDC callback refused: %s", error)
            return self.login_failure()

    def login_success(self):
        if not user_roles(self.user):
            if self.request.user.is_authenticated:
                auth.logout(self.request)
            return redirect("identity-no-access")
        response = super().login_success()  # auth.login: a new session id, the data of the old one kept
        recheck.session_started(self.request.session, getattr(self.user, "_oidc_refresh_token", None))
        return response


def provider_logout_url(request) -> str:
    """The provider's end-session URL for a session that came from the
    provider (it holds the ID token), else the local LOGOUT_REDIRECT_URL."""
    local = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not id_token or not provider.oidc_enabled():
        return local
    try:
        end_session = provider.endpoint("OIDC_OP_LOGOUT_ENDPOINT", "")
    except ImproperlyConfigured:
        end_session = ""
    if not end_session:
        return local
    params = {
        "id_token_hint": id_token,
        "post_logout_redirect_uri": settings.OIDC_POST_LOGOUT_REDIRECT_URL or request.build_absolute_uri("/"),
        "client_id": provider.client_id(),
    }
    return f"{end_session}{'&' if '?' in end_session else '?'}{urlencode(params)}"


class Logout(OIDCLogoutView):
    """Also for a session that holds an ID token but no login (a user the callback found without a role):
    they may log out at the provider to sign in as someone else. POST only (GET and HEAD: 405)."""

    http_method_names = ["post", "options"]

    def post(self, request):
        url = provider_logout_url(request)
        auth.logout(request)  # flushes the session, authenticated or not
        return HttpResponseRedirect(url)


class LoginPage(auth_views.LoginView):
    """/accounts/login/: with OIDC on, sends the browser to the provider, unless `?local=1` (local
    accounts, e.g. a break-glass superuser) or after a failed single sign-on (`?sso_failed=1`)."""

    def get(self, request, *args, **kwargs):
        if provider.oidc_enabled() and not request.GET.get("local") and not request.GET.get("sso_failed"):
            next_url = self.get_redirect_url()
            url = reverse("identity:login")
            return redirect(f"{url}?{urlencode({'next': next_url})}" if next_url else url)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        next_url = self.get_redirect_url()
        context["oidc_enabled"] = provider.oidc_enabled()
        context["sso_failed"] = bool(self.request.GET.get("sso_failed"))
        context["sso_url"] = reverse("identity:login") + (f"?{urlencode({'next': next_url})}" if next_url else "")
        return context


def no_access(request):
    return render(request, "identity/no_access.html", status=403)


MeSerializer = inline_serializer("Me", {
    "username": serializers.CharField(),
    "email": serializers.CharField(),
    "roles": serializers.ListField(child=serializers.CharField()),
    "authenticated_by": serializers.ChoiceField(choices=["api_key", "bearer_jwt", "session"]),
})


@extend_schema(tags=["auth"], responses={200: MeSerializer}, summary="Who am I")
@api_view(["GET"])
@permission_classes([requires(SIGNED_IN)])
def me(request):
    """The caller as LabManager sees them: handy to check what roles a provider's token carries."""
    if isinstance(request.auth, ApiKey):
        by = "api_key"
    elif isinstance(request.auth, BearerToken):
        by = "bearer_jwt"
    else:
        by = "session"
    user = request.user
    return Response({"username": user.get_username(), "email": user.email or "",
                     "roles": sorted(user_roles(user)), "authenticated_by": by})
