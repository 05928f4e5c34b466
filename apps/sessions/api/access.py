"""Who may use /api/remote-lab: API key or bearer token (the project's authentication classes), or an
anonymous client from settings.SESSION_ANONYMOUS_NETWORKS (apps.api.permissions.REMOTE_LAB). Plus
this API's own rate limit."""

import ipaddress

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from rest_framework.throttling import BaseThrottle

from apps.sessions.selectors import Principal
from apps.api.actors import actor_for
from apps.api.permissions import REMOTE_LAB, RolePermission, privileged
from apps.api.throttling import Bucket, client_address, take

ANONYMOUS_REFUSED = ("Send an API key (X-API-Key) or a bearer token: anonymous clients are accepted only from the "
                     "networks in SESSION_ANONYMOUS_NETWORKS.")


class RemoteLabAccess(RolePermission):
    message = ANONYMOUS_REFUSED
    policy = REMOTE_LAB


def principal_for(request) -> Principal:
    user = request.user
    if user is not None and user.is_authenticated:
        return Principal(user_id=user.pk, actor=actor_for(request), privileged=privileged(user))
    return Principal(user_id=None, actor=f"anonymous@{request.META.get('REMOTE_ADDR') or '?'}")


def client_ip(address: str | None) -> str | None:
    """The client's address as a session records it (None when it is not an IP address)."""
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


class RemoteLabRateThrottle(BaseThrottle):
    """settings.SESSION_API_RATE_LIMIT per user (per address when anonymous), counted apart from the rest
    of the API (clients poll and heartbeat, and many CI jobs may share one key): a token bucket of that
    many tokens, like apps.api.throttling.ApiRateThrottle's, with the same X-RateLimit-* headers.
    Blank: no limit."""

    def allow_request(self, request, view):
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{client_address(request._request)}"
        rate = settings.SESSION_API_RATE_LIMIT
        if not rate:
            return True
        decision = take(f"remote-lab:{ident}", Bucket.from_settings(rate))
        request._request.rate_limit = decision
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self):
        return self._wait


class RemoteLabSchema(AutoSchema):
    """Credentials are optional here (anonymous from allowed networks): add the empty requirement."""

    def get_auth(self):
        auths = super().get_auth()
        return auths + [{}] if {} not in auths else auths

    def get_tags(self):
        return ["remote-lab"]
