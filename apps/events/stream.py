"""SSE: `GET /api/events/stream`, an async Django view streaming the journal (docs/events.md).

Not a Channels AsyncHttpConsumer (it never receives group messages): a StreamingHttpResponse over an
async generator, which Django cancels when the client goes away.
"""

import asyncio
import contextlib

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import StreamingHttpResponse

from apps.events.access import (Filters, NotAllowed, NotAuthenticated, journal_head, key_from_headers, user_from_api_key,
                                viewer_for)
from apps.events.hub import Subscription
from apps.events.stats import STATS
from apps.api.middleware import problem_response

RETRY_MS = 3000


def keepalive_seconds() -> float:
    return float(settings.LIVE_KEEPALIVE_SECONDS)


# Stream authentications running at once in one process, each on a database connection of its own
# (Django gives every ASGI request its own thread): when a thousand EventSource clients reconnect
# together, this keeps them from exhausting PostgreSQL's max_connections.
AUTH_CONCURRENCY = 10
_auth_slots: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = {}


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    found = _auth_slots.get(id(loop))
    if found is None or found[0] is not loop:
        for key in [k for k, (other, _) in _auth_slots.items() if other.is_closed()]:
            del _auth_slots[key]
        found = _auth_slots[id(loop)] = (loop, asyncio.Semaphore(AUTH_CONCURRENCY))
    return found[1]


def _close_connection() -> None:
    connection.close()


async def request_viewer(request):
    """API key (X-API-Key or Bearer) first, else the session cookie; raises NotAuthenticated / NotAllowed.

    The database connection it used is closed before the stream starts: a stream lasts for hours and
    needs none (the process's journal tail reads for every subscriber)."""
    async with _slots():
        try:
            as_of = await sync_to_async(journal_head)()
            key = key_from_headers(request.headers)
            if key:
                user = await sync_to_async(user_from_api_key)(key)
            else:
                user = await request.auser()
            return await sync_to_async(viewer_for)(user, as_of=as_of)
        finally:
            await sync_to_async(_close_connection)()  # this request's thread, where the queries ran


def parse_last_event_id(value) -> int | None:
    if value in (None, ""):
        return None
    number = int(str(value).strip())
    if number < 0:
        raise ValueError(value)
    return number


async def event_stream(request):
    if request.method != "GET":
        return problem_response(request, 405, detail="Only GET is allowed on the event stream.")
    try:
        viewer = await request_viewer(request)
    except NotAuthenticated as error:
        response = problem_response(request, 401, detail=str(error))
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    except NotAllowed as error:
        return problem_response(request, 403, detail=str(error))
    try:
        last_event_id = parse_last_event_id(request.headers.get("Last-Event-ID") or request.GET.get("last_event_id"))
    except ValueError:
        return problem_response(request, 400, detail="Last-Event-ID must be a journal sequence number.")
    filters = Filters.parse(worker_ids=request.GET.get("worker_ids"), event_types=request.GET.get("event_types"),
                            instance_ids=request.GET.get("instance_ids"))
    subscription = Subscription(viewer=viewer, filters=filters)
    response = StreamingHttpResponse(_frames(subscription, last_event_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _frames(subscription: Subscription, last_event_id: int | None):
    STATS["sse_clients"] += 1
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        async with contextlib.aclosing(subscription.batches(last_event_id=last_event_id,
                                                            keepalive=keepalive_seconds())) as batches:
            async for batch in batches:
                yield b"".join(event.sse_frame() for event in batch) if batch else b": keep-alive\n\n"
        if subscription.access_changed:  # EventSource reconnects (Last-Event-ID) with the rights it has now
            yield b": access changed: reconnect\n\n"
    finally:
        STATS["sse_clients"] -= 1
