"""labmanager.asgi: async views go to Django's ASGI handler, all other HTTP to the WSGI handler on the thread
pool (HTTP_THREADS); the tests that run daphne (tests/sessions, tests/events, tests/dashboard) exercise both."""

import asyncio
import inspect

import pytest
from asgiref.testing import ApplicationCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from labmanager.asgi import ASYNC_HTTP_PATHS, HttpRouter, django_asgi_app


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield "/" + route, pattern.callback


def _is_async(callback) -> bool:
    view = getattr(callback, "view_class", None)
    return inspect.iscoroutinefunction(callback) or bool(view and getattr(view, "view_is_async", False))


def test_every_async_view_is_served_by_the_asgi_handler():
    routes = list(_routes(get_resolver().url_patterns))
    async_routes = [route for route, callback in routes if _is_async(callback)]

    assert "/api/events/stream" in async_routes  # the walk finds async views at all
    assert [route for route in async_routes if not route.startswith(ASYNC_HTTP_PATHS)] == []


def _scope(path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


def _get(app, path: str) -> int:
    async def call():
        communicator = ApplicationCommunicator(app, _scope(path))
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(10)
        while (await communicator.receive_output(10)).get("more_body"):
            pass
        await communicator.wait(1)
        return start["status"]

    return asyncio.run(call())


@pytest.mark.django_db(transaction=True)
def test_sync_views_run_on_the_pool_and_async_views_on_the_event_loop():
    router = HttpRouter(asgi_app=django_asgi_app, threads=2)
    pool = router.threaded_app.executor

    assert _get(router, "/api/events/stream") in (401, 403)  # anonymous: refused, by the async view
    assert len(pool._threads) == 0
    assert _get(router, "/api/remote-lab/healthz") == 204
    assert _get(router, "/api/remote-lab/healthz") == 204
    assert len(pool._threads) >= 1  # served by the pool's threads
    pool.shutdown(wait=True)


def test_no_threads_sends_everything_to_the_asgi_handler():
    router = HttpRouter(asgi_app=django_asgi_app, threads=0)

    assert router.threaded_app is None
    assert _get(router, "/api/remote-lab/healthz") == 204
