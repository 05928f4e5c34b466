"""ASGI entry point, served by daphne (bin/serve asgi): what must not hold a synchronous worker.

nginx (deploy/nginx/labmanager.conf.template) sends these paths here and everything else to gunicorn
(labmanager.wsgi): the live streams (`/api/events/stream`, an async view; `/ws/events` and the browser consoles `/ws/lablet-instances/<id>/consoles/<name>`, Channels) and the
requests that await long work without a thread (the async views; tests/test_serving.py checks that every
async view is routed here). HTTP goes through Django's ASGI handler, WebSocket through Channels.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from apps.events.console import ConsoleConsumer  # noqa: E402
from apps.events.consumers import EventsConsumer  # noqa: E402

websocket_urlpatterns = [
    path("ws/events", EventsConsumer.as_asgi()),
    path("ws/lablet-instances/<str:instance_id>/consoles/<str:name>", ConsoleConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
