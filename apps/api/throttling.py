"""Rate limits: token buckets in the cache (docs/security.md#rate-limits).

- Per authenticated principal (the user, whatever key, token or session it comes with):
  settings.API_RATE_LIMIT ("1000/min") with a burst of settings.API_RATE_BURST (100): a bucket of 100
  tokens refilled at 1000 a minute; a request takes one, an empty bucket answers 429.
- Per client address for unauthenticated requests (settings.API_ANON_RATE_LIMIT, burst = the count),
  including the 401s of bad, revoked or expired credentials; and per address for sign-in endpoints
  (settings.LOGIN_RATE_LIMIT): `LoginRateThrottle` for DRF views, `login_rate_limited` for Django views.
- Requests refused before DRF's throttles run (401/403 at authentication or permission) are counted
  afterwards by `RateLimitHeadersMiddleware`, so they too carry the headers and can be throttled.

The buckets (apps.api.buckets): with Redis as the cache (REDIS_URL) one hash updated by a Lua script,
atomic and shared by every process; in the embedded LocMem default the same arithmetic under a lock.

Every counted response carries X-RateLimit-Limit (the bucket size), X-RateLimit-Remaining (whole tokens
left) and X-RateLimit-Reset (epoch seconds when the bucket is full again), written by
`RateLimitHeadersMiddleware` from `request.rate_limit`; a 429 carries Retry-After (seconds until a token).
"""

import math
from functools import wraps

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpResponse
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from apps.api.buckets import Bucket, Decision, parse_rate, take
from apps.api.middleware import is_api_path, problem_response

__all__ = ["Bucket", "Decision", "parse_rate", "take", "ApiRateThrottle", "LoginRateThrottle", "login_rate_limited",
           "RateLimitHeadersMiddleware", "client_address"]


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, as apps.core.middleware.ClientAddressMiddleware set it (the one
    reader of X-Forwarded-For, trusted from TRUSTED_PROXIES only)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _record(http_request, decision: Decision) -> None:
    http_request.rate_limit = decision


def principal_bucket() -> Bucket:
    return Bucket.from_settings(settings.API_RATE_LIMIT, settings.API_RATE_BURST)


def anonymous_bucket() -> Bucket:
    return Bucket.from_settings(settings.API_ANON_RATE_LIMIT)


def login_bucket() -> Bucket:
    return Bucket.from_settings(settings.LOGIN_RATE_LIMIT)


def take_anonymous(http_request) -> Decision:
    decision = take(f"anon:{client_address(http_request)}", anonymous_bucket())
    _record(http_request, decision)
    return decision


class ApiRateThrottle(BaseThrottle):
    """The API's default throttle: the user's bucket when authenticated, the address's otherwise."""

    def allow_request(self, request, view):
        user = getattr(request, "user", None)
        http_request = request._request
        if user is not None and user.is_authenticated:
            decision = take(f"user:{user.pk}", principal_bucket())
            _record(http_request, decision)
        else:
            decision = take_anonymous(http_request)
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self):
        return self._wait


PerUserRateThrottle = ApiRateThrottle  # the name settings used before


class LoginRateThrottle(BaseThrottle):
    """settings.LOGIN_RATE_LIMIT per client address, for DRF login views (unsafe methods only)."""

    methods = ("POST",)

    def allow_request(self, request, view):
        if request.method not in self.methods:
            return True
        decision = take(f"login:{client_address(request._request)}", login_bucket())
        _record(request._request, decision)
        self._wait = decision.retry_after
        return decision.allowed

    def wait(self):
        return self._wait


def login_rate_limited(view=None, *, methods=("POST",)):
    """Decorate a plain Django login view: settings.LOGIN_RATE_LIMIT per address for `methods` (the POST
    of a password form; GET too for a view that starts a sign-in at the provider). Over the limit: 429
    (problem+json under /api, a short text page elsewhere) with Retry-After, and the view does not run."""

    def decorate(func):
        @wraps(func)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                return func(request, *args, **kwargs)
            decision = take(f"login:{client_address(request)}", login_bucket())
            _record(request, decision)
            if decision.allowed:
                return func(request, *args, **kwargs)
            return too_many_requests(request, decision, "Too many sign-in attempts from your address.")

        return wrapper

    return decorate(view) if view is not None else decorate


def retry_after_seconds(decision: Decision) -> int:
    return max(math.ceil(decision.retry_after), 1)


def too_many_requests(request, decision: Decision, detail: str) -> HttpResponse:
    seconds = retry_after_seconds(decision)
    detail = f"{detail} Try again in {seconds} s."
    if is_api_path(request.path):
        response = problem_response(request, 429, detail=detail)
    else:
        response = HttpResponse(detail + "\n", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(seconds)
    return response


class RateLimitHeadersMiddleware:
    """Writes X-RateLimit-* on every response whose request was counted. A request that an API view with
    the default throttle refused before its throttle ran (401 or 403: bad, revoked or expired credentials,
    no credentials, a role that does not allow it) is counted afterwards, against the user's bucket or
    the address's, and becomes a 429 once that bucket is empty."""

    sync_capable = True
    async_capable = True  # no thread hop under ASGI, but for the few refusals it counts

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        response = self.get_response(request)
        if _uncounted_refusal(request, response):
            response = _count_refusal(request, response)
        return _with_headers(request, response)

    async def __acall__(self, request):
        response = await self.get_response(request)
        if _uncounted_refusal(request, response):
            response = await sync_to_async(_count_refusal)(request, response)
        return _with_headers(request, response)


def _uncounted_refusal(request, response) -> bool:
    return getattr(request, "rate_limit", None) is None and response.status_code in (401, 403) and _default_throttled(request)


def _count_refusal(request, response):
    user = getattr(request, "user", None)  # DRF's authenticated user (it sets it on the HttpRequest)
    if user is not None and user.is_authenticated:
        decision = take(f"user:{user.pk}", principal_bucket())
        _record(request, decision)
    else:
        decision = take_anonymous(request)
    if not decision.allowed:
        response = too_many_requests(request, decision, "Request was throttled.")
    return response


def _with_headers(request, response):
    decision = getattr(request, "rate_limit", None)
    if isinstance(decision, Decision):
        for name, value in decision.as_headers().items():
            response[name] = value
    return response


def _default_throttled(request) -> bool:
    """Whether the resolved view uses the API's default throttle (not its own, like /api/remote-lab)."""
    match = getattr(request, "resolver_match", None)
    cls = getattr(match.func, "cls", None) if match is not None else None
    if cls is None:
        return False
    classes = getattr(cls, "throttle_classes", api_settings.DEFAULT_THROTTLE_CLASSES)
    return any(issubclass(c, ApiRateThrottle) for c in classes)
