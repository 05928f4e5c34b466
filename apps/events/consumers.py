"""WebSocket `/ws/events`: the same events and filters as the SSE stream, chosen by a subscribe message.

Client -> server: `{"type": "subscribe", "event_types": [...], "worker_ids": [...], "instance_ids": [...],
"last_event_id": N}`
(again to change the subscription) and `{"type": "ping"}`.
Server -> client: `{"type": "subscribed", ...}`, `{"type": "event", "event": "<name>", "id": N, "data": {...}}`,
`{"type": "pong"}`, `{"type": "error", "detail": "..."}`.

Authentication (docs/events.md#authentication), never from the URL by default (proxies log URLs):
- the subprotocol `labmanager.bearer.<API key or access token>`, offered with `labmanager.v1`, the one the
  server selects (the credential is never echoed);
- the X-API-Key / Authorization: Bearer headers of the handshake, else the session cookie;
- none of these: the socket is accepted and its first message must be `{"type": "auth", "token": "..."}`
  within EVENTS_WS_AUTH_TIMEOUT seconds; nothing is sent before (`{"type": "authenticated"}` after);
- `?token=` / `?api_key=` only with EVENTS_WS_QUERY_TOKEN; otherwise the socket is closed with 4400.
A session cookie's provider session is re-checked at connect when due (apps.identity.recheck), as HTTP
requests are. A credential of the handshake that fails, or a user without a role, is refused with 403. After
the handshake: 4400 (a key in the URL), 4401 (a bad or missing credential), 4403 (a role without access), 4408
(no credential in time), 4409 (the user's roles changed or they were deprovisioned: the journal said so while
subscribed), each after an `error` message with the reason (daphne sends no close reason).
"""

import asyncio
import contextlib
import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection

from apps.events.access import (Filters, NotAllowed, NotAuthenticated, journal_head, key_from_headers, user_from_api_key,
                                viewer_for)
from apps.events.hub import Subscription
from apps.events.stats import STATS
from apps.identity.recheck import websocket_session_recheck

PROTOCOL = "labmanager.v1"
BEARER_PROTOCOL_PREFIX = "labmanager.bearer."
CLOSE_KEY_IN_URL, CLOSE_UNAUTHENTICATED, CLOSE_NOT_ALLOWED, CLOSE_AUTH_TIMEOUT = 4400, 4401, 4403, 4408
CLOSE_ACCESS_CHANGED = 4409
ACCESS_CHANGED = ("Your roles changed or your access was removed since this socket authenticated: connect again "
                  "(with the rights you have now).")
AUTH_FIRST = 'Authenticate first: send {"type": "auth", "token": "<API key or access token>"}.'
KEY_IN_URL = ("A credential in the URL is refused (URLs end up in logs): offer the subprotocols labmanager.v1 and "
              'labmanager.bearer.<key>, or send {"type": "auth", "token": "<key>"} first.')


def query_credential(scope) -> str | None:
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    for name in ("token", "api_key"):
        if query.get(name):
            return query[name][0]
    return None


def subprotocol_credential(scope) -> str | None:
    """`labmanager.bearer.<credential>` among the offered subprotocols (API keys, `lm_` + base64url, and
    JWTs, base64url parts joined by dots, are valid subprotocol tokens as they are)."""
    for offered in scope.get("subprotocols") or ():
        if offered.startswith(BEARER_PROTOCOL_PREFIX) and len(offered) > len(BEARER_PROTOCOL_PREFIX):
            return offered[len(BEARER_PROTOCOL_PREFIX):]
    return None


def header_credential(scope) -> str | None:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", [])}
    return key_from_headers({name.title(): value for name, value in headers.items()} | headers)


@database_sync_to_async
def credential_viewer(*, key: str | None, scope=None):
    """The viewer of `key` (an API key or access token), else of the session's user (its provider session
    re-checked first, as the HTTP middleware does for requests); None when neither is there. Raises
    NotAuthenticated (a bad key) / NotAllowed (no role for the events)."""
    try:
        if key:
            as_of = journal_head()
            return viewer_for(user_from_api_key(key), as_of=as_of)
        if scope is None:
            return None
        websocket_session_recheck(scope)  # may end the session: the socket goes on anonymous
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        return viewer_for(user, as_of=journal_head())
    finally:
        # Closed in the call's own context, where its connection lives (database_sync_to_async's clean-up
        # runs outside it and, with asgiref 3.13's copy-on-write locals, may not see it); a subscription
        # lasts for hours and needs no connection (the process's journal tail reads for it).
        connection.close()


class EventsConsumer(AsyncWebsocketConsumer):
    viewer = None
    pump: asyncio.Task | None = None
    deadline: asyncio.Task | None = None
    closing = False

    async def connect(self):
        protocol = PROTOCOL if PROTOCOL in (self.scope.get("subprotocols") or ()) else None
        in_url = query_credential(self.scope)
        if in_url and not settings.EVENTS_WS_QUERY_TOKEN:
            await self.accept(protocol)
            await self._refuse(CLOSE_KEY_IN_URL, KEY_IN_URL)
            return
        in_protocol = subprotocol_credential(self.scope)
        if in_protocol and protocol is None:
            await self.close()  # a client that offers only the credential could not accept our answer: 403
            return
        try:
            self.viewer = await credential_viewer(key=in_url or in_protocol or header_credential(self.scope),
                                                  scope=self.scope)
        except (NotAuthenticated, NotAllowed):
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept(protocol)
        if self.viewer is not None:
            STATS["websocket_clients"] += 1
        else:  # the credential comes in the first message
            self.deadline = asyncio.create_task(self._auth_deadline(settings.EVENTS_WS_AUTH_TIMEOUT))

    async def disconnect(self, code):
        self._stop_deadline()
        await self._stop_pump()
        if self.viewer is not None:
            STATS["websocket_clients"] -= 1
            self.viewer = None

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return
        try:
            message = json.loads(text_data or "")
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind = None
        if self.viewer is None:
            await self._authenticate(message.get("token") if kind == "auth" else None)
        elif kind == "ping":
            await self.send('{"type":"pong"}')
        elif kind == "subscribe":
            await self._subscribe(message)
        else:
            await self._error("Send {\"type\": \"subscribe\", ...} or {\"type\": \"ping\"}.")

    async def _authenticate(self, token):
        if not isinstance(token, str) or not token.strip():
            await self._refuse(CLOSE_UNAUTHENTICATED, AUTH_FIRST)
            return
        self._stop_deadline()  # in time: the lookup below may take a moment
        try:
            viewer = await credential_viewer(key=token.strip())
        except NotAuthenticated as error:
            await self._refuse(CLOSE_UNAUTHENTICATED, str(error))
            return
        except NotAllowed as error:
            await self._refuse(CLOSE_NOT_ALLOWED, str(error))
            return
        self.viewer = viewer
        STATS["websocket_clients"] += 1
        await self.send(json.dumps({"type": "authenticated", "username": viewer.username}))

    async def _auth_deadline(self, seconds: float):
        await asyncio.sleep(seconds)
        if self.viewer is None and not self.closing:
            await self._refuse(CLOSE_AUTH_TIMEOUT, f"No credential within {seconds:g} s. " + AUTH_FIRST)

    def _stop_deadline(self):
        if self.deadline is not None and self.deadline is not asyncio.current_task():
            self.deadline.cancel()
        self.deadline = None

    async def _refuse(self, code: int, detail: str):
        """The reason as an error message (daphne drops a close frame's reason), then the close code."""
        self.closing = True
        await self._error(detail)
        await self.close(code=code)

    async def _subscribe(self, message: dict):
        last_event_id = message.get("last_event_id")
        if last_event_id is not None and (not isinstance(last_event_id, int) or last_event_id < 0):
            await self._error("last_event_id must be a journal sequence number.")
            return
        for name in ("event_types", "worker_ids", "instance_ids"):
            value = message.get(name)
            if value is not None and not isinstance(value, (list, str)):
                await self._error(f"{name} must be a list of strings.")
                return
        filters = Filters.parse(worker_ids=message.get("worker_ids"), event_types=message.get("event_types"),
                                instance_ids=message.get("instance_ids"))
        await self._stop_pump()
        subscription = Subscription(viewer=self.viewer, filters=filters)
        await self.send(json.dumps({"type": "subscribed", "event_types": sorted(filters.event_types),
                                    "worker_ids": sorted(filters.worker_ids),
                                    "instance_ids": sorted(filters.instance_ids), "last_event_id": last_event_id}))
        self.pump = asyncio.create_task(self._pump(subscription, last_event_id))

    async def _pump(self, subscription: Subscription, last_event_id):
        async with contextlib.aclosing(subscription.batches(last_event_id=last_event_id)) as batches:
            async for batch in batches:
                for event in batch:
                    await self.send(f'{{"type":"event","event":"{event.name}","id":{event.sequence},'
                                    f'"data":{event.json()}}}')
        if subscription.access_changed:
            await self._refuse(CLOSE_ACCESS_CHANGED, ACCESS_CHANGED)
            return
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
