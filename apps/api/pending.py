"""DRF views whose answer needs a long wait (a CML boot, an S3 archive), served without holding a thread.

The DRF view still does everything a request goes through (authentication, the permission policy, the
throttle, input validation, the short first step of its service) and returns its `Response` without a
body, marked with `pending_response(...)`. The async view made by `awaiting(DrfView.as_view())` calls it
in a thread, then awaits the marked work on the event loop and fills the same `Response` in: its data, or
the problem+json of the error, from the one exception handler. Django renders it as any DRF response.

    path("lab", awaiting(LabView.as_view()), name="lab")
    urlpatterns = awaiting_routes(router.urls, {"instance-terminate"})  # a router's actions, by route name
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response

from apps.api.problems import problem_exception_handler

MARK = "pending"  # the attribute of a Response whose body is still to be awaited


@dataclass(frozen=True)
class Pending:
    finish: Callable[[], Awaitable[Any]]  # the long part, awaited on the event loop
    data: Callable[[Any], Any]  # its result → the response's data (in a thread: serializers may query)
    give_up: Callable[[], None]  # undoes the view's first step when `finish` will never run (client gone)


def pending_response(*, finish: Callable[[], Awaitable[Any]], data: Callable[[Any], Any],
                     give_up: Callable[[], None], status: int = 200) -> Response:
    """What a DRF view returns when the rest of its work is to be awaited by `awaiting`."""
    response = Response(status=status)
    setattr(response, MARK, Pending(finish=finish, data=data, give_up=give_up))
    return response


def _problem(response: Response, exc: Exception) -> Response:
    """The DRF view's own error response for `exc`, as DRF's handle_exception and finalize_response make it."""
    problem = problem_exception_handler(exc, response.renderer_context)
    problem.exception = True
    problem.accepted_renderer = response.accepted_renderer
    problem.accepted_media_type = response.accepted_media_type
    problem.renderer_context = response.renderer_context
    for header, value in response.items():  # Allow, Vary: what finalize_response added
        if header.lower() != "content-type":
            problem[header] = value
    return problem


def awaiting(drf_view):
    """An async view around `drf_view` (an `APIView.as_view()`) that awaits what its response marks pending.

    A client that goes away while the DRF view runs lets it end, and gives its pending work up; one that
    goes away during the wait cancels the work (its own cleanup runs)."""

    @csrf_exempt
    async def view(request, *args, **kwargs):
        first = asyncio.ensure_future(sync_to_async(drf_view)(request, *args, **kwargs))
        try:
            response = await asyncio.shield(first)
        except asyncio.CancelledError:
            await asyncio.wait([first])
            pending = None if first.cancelled() or first.exception() else getattr(first.result(), MARK, None)
            if pending is not None:
                await asyncio.shield(sync_to_async(pending.give_up)())
            raise
        pending = getattr(response, MARK, None)
        if pending is None:
            return response
        delattr(response, MARK)
        try:
            response.data = await sync_to_async(pending.data)(await pending.finish())
        except Exception as exc:  # as DRF: every error goes to the one exception handler
            return await sync_to_async(_problem)(response, exc)
        return response

    # drf-spectacular documents the DRF view (a ViewSet's action: `actions`, its method map, and no view_class)
    for name in ("cls", "initkwargs", "view_class", "view_initkwargs", "actions"):
        if hasattr(drf_view, name):
            setattr(view, name, getattr(drf_view, name))
    return view


def awaiting_routes(patterns, names: set[str]) -> list:
    """A router's routes, those named in `names` served by `awaiting(...)` around the router's own view (same
    regex, same name); the others as they are. Every name must be one of the routes."""
    missing = names - {pattern.name for pattern in patterns}
    assert not missing, f"no such route: {missing}"
    return [re_path(pattern.pattern.regex.pattern, awaiting(pattern.callback), name=pattern.name)
            if pattern.name in names else pattern for pattern in patterns]
