"""Every middleware runs in the mode of the handler it wraps: under ASGI (daphne) nothing of ours holds a
thread while an async view awaits."""

from django.conf import settings
from django.utils.module_loading import import_string


def test_every_middleware_runs_in_the_mode_of_the_view():
    """A sync-only middleware runs in a thread under ASGI and waits there for the view: POST /lab's wait
    would hold that thread (apps.core.middleware.SyncAndAsyncMiddleware)."""
    for name in settings.MIDDLEWARE:
        assert getattr(import_string(name), "async_capable", False), name
