"""Who may use /api/remote-lab: API key or bearer token (the project's authentication classes), or an
anonymous client from settings.SESSION_ANONYMOUS_NETWORKS. Plus this API's own rate limit."""

import ipaddress
import time
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import BasePermission
from rest_framework.throttling import BaseThrottle

from apps.sessions.selectors import Principal
from labmanager.api.actors import actor_for
from labmanager.api.roles import ADMIN, OPERATOR, has_role
from labmanager.api.throttling import parse_rate

ANONYMOUS_REFUSED = ("Send an API key (X-API-Key) or a bearer token: anonymous clients are accepted only from the "
                     "networks in SESSION_ANONYMOUS_NETWORKS.")


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def anonymous_allowed(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(settings.SESSION_ANONYMOUS_NETWORKS)))


class RemoteLabAccess(BasePermission):
    message = ANONYMOUS_REFUSED

    def has_permission(self, request, view):
        if request.user is not None and request.user.is_authenticated:
            return True
        return anonymous_allowed(request.META.get("REMOTE_ADDR"))


def principal_for(request) -> Principal:
    user = request.user
    if user is not None and user.is_authenticated:
        return Principal(user_id=user.pk, actor=actor_for(request), privileged=has_role(user, ADMIN, OPERATOR))
    return Principal(user_id=None, actor=f"anonymous@{request.META.get('REMOTE_ADDR') or '?'}")


class RemoteLabRateThrottle(BaseThrottle):
    """settings.SESSION_API_RATE_LIMIT per user (per IP when anonymous), a fixed window in the cache
    like labmanager.api.throttling.PerUserRateThrottle but counted apart from the rest of the API: clients
    poll and heartbeat, and many CI jobs may share one key. Blank: no limit."""

    def allow_request(self, request, view):
        rate = settings.SESSION_API_RATE_LIMIT
        if not rate:
            return True
        limit, period = parse_rate(rate)
        user = getattr(request, "user", None)
        ident = f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{self.get_ident(request)}"
        now = time.time()
        key = f"ratelimit:remote-lab:{ident}:{period}:{int(now // period)}"
        if cache.add(key, 1, period + 1):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:
                cache.set(key, 1, period + 1)
                count = 1
        self._wait = period - (now % period)
        return count <= limit

    def wait(self):
        return self._wait


class RemoteLabSchema(AutoSchema):
    """Credentials are optional here (anonymous from allowed networks): add the empty requirement."""

    def get_auth(self):
        auths = super().get_auth()
        return auths + [{}] if {} not in auths else auths

    def get_tags(self):
        return ["remote-lab"]
