"""WebSocket `/ws/events`: the same events and filters as the SSE stream, chosen by a subscribe message.

Client -> server: `{"type": "subscribe", "event_types": [...], "worker_ids": [...], "last_event_id": N}`
(again to change the subscription) and `{"type": "ping"}`.
Server -> client: `{"type": "subscribed", ...}`, `{"type": "event", "event": "<name>", "id": N, "data": {...}}`,
`{"type": "pong"}`, `{"type": "error", "detail": "..."}`.
Authentication: the session cookie, else an API key in the query string (`?token=` or `?api_key=`) or in
the X-API-Key / Authorization: Bearer headers. Unauthenticated or role-less handshakes are refused (403).
"""

import asyncio
import contextlib
import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import connection

from apps.events.access import Filters, NotAllowed, NotAuthenticated, key_from_headers, user_from_api_key, viewer_for
from apps.events.hub import Subscription
from apps.events.stats import STATS


def scope_api_key(scope) -> str | None:
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    for name in ("token", "api_key"):
        if query.get(name):
            return query[name][0]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}
    return key_from_headers({name.title(): value for name, value in headers.items()} | headers)


@database_sync_to_async
def scope_viewer(scope):
    try:
        key = scope_api_key(scope)
        user = user_from_api_key(key) if key else scope.get("user")
        return viewer_for(user)
    finally:
        # Closed in the call's own context, where its connection lives (database_sync_to_async's clean-up
        # runs outside it and, with asgiref 3.13's copy-on-write locals, may not see it); a subscription
        # lasts for hours and needs no connection (the process's journal tail reads for it).
        connection.close()


class EventsConsumer(AsyncWebsocketConsumer):
    viewer = None
    pump: asyncio.Task | None = None

    async def connect(self):
        try:
            self.viewer = await scope_viewer(self.scope)
        except (NotAuthenticated, NotAllowed):
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept()
        STATS["websocket_clients"] += 1

    async def disconnect(self, code):
        await self._stop_pump()
        if self.viewer is not None:
            STATS["websocket_clients"] -= 1
            self.viewer = None

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind = None
        if kind == "ping":
            await self.send('{"type":"pong"}')
        elif kind == "subscribe":
            await self._subscribe(message)
        else:
            await self._error("Send {\"type\": \"subscribe\", ...} or {\"type\": \"ping\"}.")

    async def _subscribe(self, message: dict):
        last_event_id = message.get("last_event_id")
        if last_event_id is not None and (not isinstance(last_event_id, int) or last_event_id < 0):
            await self._error("last_event_id must be a journal sequence number.")
            return
        for name in ("event_types", "worker_ids"):
            value = message.get(name)
            if value is not None and not isinstance(value, (list, str)):
                await self._error(f"{name} must be a list of strings.")
                return
        filters = Filters.parse(worker_ids=message.get("worker_ids"), event_types=message.get("event_types"))
        await self._stop_pump()
        subscription = Subscription(viewer=self.viewer, filters=filters)
        await self.send(json.dumps({"type": "subscribed", "event_types": sorted(filters.event_types),
                                    "worker_ids": sorted(filters.worker_ids), "last_event_id": last_event_id}))
        self.pump = asyncio.create_task(self._pump(subscription, last_event_id))

    async def _pump(self, subscription: Subscription, last_event_id):
        async with contextlib.aclosing(subscription.batches(last_event_id=last_event_id)) as batches:
            async for batch in batches:
                for event in batch:
                    await self.send(f'{{"type":"event","event":"{event.name}","id":{event.sequence},'
                                    f'"data":{event.json()}}}')
        # The stream ended (the client fell too far behind): it may resubscribe with its last id.
        await self._error("Too far behind: resubscribe with last_event_id.")

    async def _stop_pump(self):
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump
            self.pump = None

    async def _error(self, detail: str):
        await self.send(json.dumps({"type": "error", "detail": detail}))
