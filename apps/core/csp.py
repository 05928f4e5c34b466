"""Content-Security-Policy header: settings.CONTENT_SECURITY_POLICY (empty in development; the production
profile, labmanager/settings_production.py, defaults to `build_policy()`).

The policy string is sent on every response that has none yet; while it is empty the middleware is not
loaded at all. Scripts come only from this site (no inline scripts, no eval); docs/operations.md
explains each directive.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed

HEADER = "Content-Security-Policy"


def build_policy(*, form_action_extra: list[str] | None = None) -> str:
    """The default policy: everything from 'self'; `form_action_extra` are origins a form may lead to
    (the OIDC provider, where logout's POST redirects)."""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # Django admin and ReDoc/Swagger UI set style attributes and <style> elements: styles only.
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],  # fetch/XHR and EventSource (/api/events/stream), WebSocket same origin
        "worker-src": ["'self'", "blob:"],  # ReDoc's search worker
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'", *(form_action_extra or [])],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


class ContentSecurityPolicyMiddleware:
    """In the mode of what it wraps, like apps.core.middleware.SyncAndAsyncMiddleware (not imported here:
    the settings import this module)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.policy = settings.CONTENT_SECURITY_POLICY
        if not self.policy:
            raise MiddlewareNotUsed
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._add(self.get_response(request))

    async def __acall__(self, request):
        return self._add(await self.get_response(request))

    def _add(self, response):
        if HEADER not in response:
            response[HEADER] = self.policy
        return response
