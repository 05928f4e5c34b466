"""ASGI entry point: HTTP through Django, WebSocket through Channels (/ws/events: apps/audit/live).

HTTP is served two ways (docs/performance.md, "Serving HTTP"):
- the async views (the SSE stream: `ASYNC_HTTP_PATHS`) through Django's ASGI handler, on the event loop;
- everything else, which is sync code (DRF, the dashboard, the admin, sync middleware), through Django's
  WSGI handler on a fixed pool of `settings.HTTP_THREADS` threads (a2wsgi). Django's ASGI handler would
  start a new thread for every request and cross between the event loop and threads three times per
  request (sync middleware around an async core around a sync view); the pool's threads are reused and
  keep their database connections (CONN_MAX_AGE). About half the server CPU per request.
`HTTP_THREADS=0` sends all HTTP through Django's ASGI handler.

In front of both, `apps.sessions.api.fast.RemoteLabFastPath` serves the remote-lab clients' hot requests
(POST /session, GET /session/{id}, POST /session/heartbeat, GET /healthz) without Django's request
handling, and passes every other request, and every one it would not answer with success, to Django
(`SESSION_FAST_PATH=false`: everything through Django).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
django_asgi_app = get_asgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from apps.audit.live.consumers import EventsConsumer  # noqa: E402

# Paths of async views: they need the event loop (tests/test_asgi.py checks that every async view is here).
ASYNC_HTTP_PATHS = ("/api/events/stream",)


class HttpRouter:
    """Async views to Django's ASGI handler, all other HTTP to the WSGI handler on a thread pool."""

    def __init__(self, *, asgi_app, threads: int):
        self.asgi_app = asgi_app
        self.threads = threads
        self.threaded_app = WSGIMiddleware(get_wsgi_application(), workers=threads) if threads else None

    async def __call__(self, scope, receive, send):
        if self.threaded_app is None or scope["path"].startswith(ASYNC_HTTP_PATHS):
            return await self.asgi_app(scope, receive, send)
        return await self.threaded_app(scope, receive, send)


websocket_urlpatterns = [path("ws/events", EventsConsumer.as_asgi())]

http_app = HttpRouter(asgi_app=django_asgi_app, threads=settings.HTTP_THREADS)
if settings.SESSION_FAST_PATH:  # the remote-lab clients' hot requests, in front of Django
    from apps.sessions.api.fast import RemoteLabFastPath  # noqa: E402

    http_app = RemoteLabFastPath(http_app, threads=settings.SESSION_FAST_PATH_THREADS)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
