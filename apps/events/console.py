"""WebSocket `/ws/lablet-instances/<id>/consoles/<port name>`: a browser console (xterm.js) of a running
instance's device, proxied by LabManager to the TCP port of the instance's console entry (docs/consoles.md).

Frames: browser → server, text (keystrokes, UTF-8) or binary; server → browser, binary (the device's bytes,
telnet negotiation stripped and answered: apps/events/telnet.py) and text JSON control messages
`{"type": "error"|"closed", "detail": "..."}` before the server closes with one of the codes below (daphne
sends no close reason).

Who may open it: `console_principal(scope, instance_id)`. The handshake is refused (403) for a principal who may
not see the instance (and by AllowedHostsOriginValidator for an Origin that is not this site). After the
handshake: 4403 (a student's link was revoked or rotated), 4404 (no such running console), 4408 (idle for CONSOLE_IDLE_SECONDS), 4410 (the instance was torn
down), 4429 (CONSOLE_MAX_PER_INSTANCE consoles of this instance are open), 4502 (the device port did not
answer), 4503 (CONSOLE_MAX_PER_PROCESS consoles are open in this process). A device that closes its end closes
the socket with 1000.

Teardown: each console is a subscriber of the process's live-event hub (apps/events/hub.py, one journal tail
per process, woken by the Channels doorbell) filtered to its instance; on each `lablet_instance.*` event it
re-reads the instance and closes (4410) once the instance left RUNNING/COLLECTING/GRADING or no longer holds
the port. Opening and closing are journalled (`console.opened`, `console.closed`).
"""

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connection, transaction

from apps.audit.services import audit_record
from apps.events import telnet
from apps.events.access import Filters, NotAllowed, NotAuthenticated, Viewer, user_from_api_key
from apps.events.consumers import PROTOCOL, header_credential, subprotocol_credential
from apps.events.hub import Subscription
from apps.identity.recheck import websocket_session_recheck

CLOSE_NOT_FOUND, CLOSE_IDLE, CLOSE_TORN_DOWN = 4404, 4408, 4410
CLOSE_INSTANCE_LIMIT, CLOSE_UNREACHABLE, CLOSE_PROCESS_LIMIT = 4429, 4502, 4503
CLOSE_LINK_ENDED = 4403
CONNECT_TIMEOUT = 5.0
READ_SIZE = 4096

# This process's open consoles: all of them, and per instance (production runs one daphne process).
OPEN: dict[str, int] = {}
STATS = {"open": 0}


@dataclass(frozen=True)
class Target:
    instance_id: str
    name: str
    host: str
    port: int
    console_type: str


def student_address(scope) -> str:
    """The socket's client address, as ClientAddressMiddleware gives requests theirs (X-Forwarded-For from
    TRUSTED_PROXIES only): the student page's rate-limit bucket and the journal use the same address."""
    from apps.core.middleware import scope_client_address

    return scope_client_address(scope)


def student_link_principal(scope, instance_id: str) -> str | None:
    """The actor (`student-link:<token prefix>`) when the socket offers a student token (subprotocol
    `labmanager.bearer.sl_...`, never the URL) whose link is active (not revoked, expired or ended) and opens
    `instance_id`, else None. Counted in the student page's per-address bucket (STUDENT_LINK_RATE_LIMIT): over
    it, None. A use of the link (student_link_record_use). Synchronous."""
    from apps.api.buckets import Bucket, take
    from apps.lablets.services.student_links import (ACTIVE, TOKEN_PREFIX, student_link_actor,
                                                     student_link_record_use, student_link_resolve)

    token = subprotocol_credential(scope)
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    address = student_address(scope)
    if not take(f"student:{address}", Bucket.from_settings(settings.STUDENT_LINK_RATE_LIMIT)).allowed:
        return None
    found = student_link_resolve(token)
    if found is None or found.state != ACTIVE or found.instance.public_id != instance_id:
        return None
    student_link_record_use(link=found.link, address=address)
    return student_link_actor(found.link)


def student_link_still_opens(scope, instance_id: str) -> bool:
    """The socket's student token still opens `instance_id` (re-checked when the link changes)."""
    from apps.lablets.services.student_links import student_link_instance

    instance = student_link_instance(subprotocol_credential(scope) or "")
    return instance is not None and instance.public_id == instance_id


def console_principal(scope, instance_id: str) -> tuple[bool, str]:
    """(may_open, actor) for the socket's principal and the instance. Synchronous (run in a thread).

    The same rule as the API's and the dashboard's instances (selectors.lablet_instance_visible_to): admins and
    operators, and the instructor who created it; the credential is the session cookie (the dashboard), or an
    API key / access token as for /ws/events (subprotocol `labmanager.bearer.<key>` or the handshake's
    headers). A student token (`sl_`, in the subprotocol) opens its own instance's consoles only
    (student_link_principal)."""
    from apps.api.permissions import LABLET_INSTANCES, allows
    from apps.lablets.selectors import lablet_instance_visible_to

    from apps.lablets.services.student_links import TOKEN_PREFIX

    user, actor = None, ""
    key = subprotocol_credential(scope) or header_credential(scope)
    if key and key.startswith(TOKEN_PREFIX):  # a student token is no API key: only the student link rule
        student = student_link_principal(scope, instance_id)
        return (True, student) if student else (False, "anonymous")
    try:
        if key:
            user = user_from_api_key(key)
            actor = f"{user.get_username()} (apikey:{key[:10]})" if key.startswith("lm_") else user.get_username()
        else:
            websocket_session_recheck(scope)
            user = scope.get("user")
            actor = user.get_username() if user is not None and user.is_authenticated else ""
    except (NotAuthenticated, NotAllowed):
        user = None
    if user is not None and user.is_authenticated and allows(LABLET_INSTANCES, user=user):
        if lablet_instance_visible_to(user=user).filter(public_id=instance_id).exists():
            return True, actor
    return False, actor or "anonymous"


def console_target(instance_id: str, name: str) -> Target | None:
    """The console entry `name` of a running instance whose port the instance still holds, else None."""
    from apps.lablets.models import LabletInstance
    from apps.lablets.selectors import lablet_instance_browser_consoles

    instance = LabletInstance.objects.filter(public_id=instance_id).only("pk", "status", "console").first()
    for entry in lablet_instance_browser_consoles(instance=instance) if instance is not None else ():
        if entry["name"] == name:
            return Target(instance_id, name, str(entry["host"]), int(entry["port"]), entry["console_type"])
    return None


def _journal(*, event_type: str, actor: str, target: Target, metadata: dict) -> None:
    with transaction.atomic():
        audit_record(event_type=event_type, actor=actor, resource_type="lablet_instance",
                     resource_id=target.instance_id, action=event_type,
                     metadata={"instance_id": target.instance_id, "port_name": target.name, **metadata})


def _in_thread(function):
    """A synchronous database call in a thread of the pool (not the one thread-sensitive thread: hundreds of
    consoles opening at once must not queue behind each other), its connection closed there."""
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()
    return sync_to_async(call, thread_sensitive=False)


principal = _in_thread(console_principal)
student_still_opens = _in_thread(student_link_still_opens)
target_of = _in_thread(console_target)
journal = _in_thread(_journal)

# The hub's viewer for a console's teardown watch: it sees every event (the filter narrows it to the instance)
# and no change of rights ends it (as_of beyond any sequence).
WATCHER = Viewer(user_pk=0, username="", privileged=True, as_of=sys.maxsize)


class ConsoleConsumer(AsyncWebsocketConsumer):
    # No channel layer: a console takes no group messages (teardown comes through the hub), so no per-socket
    # channel and no receive loop on Redis (an alias that is not configured gives None).
    channel_layer_alias = "console-none"
    target: Target | None = None
    actor = ""
    counted = False
    opened_at = 0.0
    bytes_in = bytes_out = 0
    reader = writer = None
    tasks: list
    closing = False

    async def dispatch(self, message):
        """Channels' dispatch without its `aclose_old_connections()` per message (a hop to the thread-sensitive
        thread for every keystroke): this consumer's database calls run in _in_thread and close their own
        connection."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        self.tasks = []
        kwargs = self.scope["url_route"]["kwargs"]
        instance_id, name = kwargs["instance_id"], kwargs["name"]
        may_open, self.actor = await principal(self.scope, instance_id)
        if not may_open:
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept(PROTOCOL if PROTOCOL in (self.scope.get("subprotocols") or ()) else None)
        if STATS["open"] >= settings.CONSOLE_MAX_PER_PROCESS:
            await self._refuse(CLOSE_PROCESS_LIMIT, f"This server has {STATS['open']} consoles open, its limit: "
                                                    "try again later.")
            return
        if OPEN.get(instance_id, 0) >= settings.CONSOLE_MAX_PER_INSTANCE:
            await self._refuse(CLOSE_INSTANCE_LIMIT, f"{OPEN[instance_id]} consoles of {instance_id} are open, "
                                                     "its limit: close one first.")
            return
        self._count(instance_id, +1)  # counted before the awaits below: concurrent opens see it
        target = await target_of(instance_id, name)
        if target is None:
            await self._refuse(CLOSE_NOT_FOUND, f"{instance_id} has no running console {name!r}.")
            return
        try:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(target.host, target.port),
                                                              CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            await self._refuse(CLOSE_UNREACHABLE, f"The console port of {name!r} does not answer.")
            return
        self.target, self.opened_at, self.last_input = target, time.monotonic(), time.monotonic()
        await journal(event_type="console.opened", actor=self.actor, target=target,
                      metadata={"console_type": target.console_type})
        self.tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._idle()),
                      asyncio.create_task(self._watch())]

    async def receive(self, text_data=None, bytes_data=None):
        if self.writer is None or self.closing:
            return
        data = text_data.encode() if text_data is not None else (bytes_data or b"")
        self.last_input = time.monotonic()
        self.bytes_in += len(data)
        self.writer.write(telnet.escape(data))
        await self.writer.drain()

    async def disconnect(self, code):
        self.closing = True
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None
        if self.counted:
            self._count(self.scope["url_route"]["kwargs"]["instance_id"], -1)
        if self.target is not None:
            target, self.target = self.target, None
            await journal(event_type="console.closed", actor=self.actor, target=target,
                          metadata={"duration_seconds": round(time.monotonic() - self.opened_at, 3),
                                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "close_code": code})

    def _count(self, instance_id: str, delta: int):
        self.counted = delta > 0
        STATS["open"] += delta
        OPEN[instance_id] = OPEN.get(instance_id, 0) + delta
        if OPEN[instance_id] <= 0:
            OPEN.pop(instance_id, None)

    async def _pump(self):
        """The device's bytes to the browser, until the device closes its end."""
        negotiation = telnet.TelnetFilter()
        while True:
            chunk = await self.reader.read(READ_SIZE)
            if not chunk:
                break
            data, answer = negotiation.feed(chunk)
            if answer:
                self.writer.write(answer)
            if data:
                self.bytes_out += len(data)
                await self.send(bytes_data=data)
        if not self.closing:
            await self._refuse(1000, "The device closed its console.", kind="closed")

    async def _idle(self):
        limit = float(settings.CONSOLE_IDLE_SECONDS)
        while True:
            left = self.last_input + limit - time.monotonic()
            if left <= 0:
                await self._refuse(CLOSE_IDLE, f"Closed after {limit:g} s without input.", kind="closed")
                return
            await asyncio.sleep(left)

    async def _watch(self):
        """Close at the instance's teardown: its lifecycle events (any process) come through the hub. A student's
        console also closes (4403) when its link is revoked or rotated (`student_link.*` events)."""
        student = self.actor.startswith("student-link:")
        subscription = Subscription(viewer=WATCHER, filters=Filters.parse(instance_ids=[self.target.instance_id]))
        async with contextlib.aclosing(subscription.batches()) as batches:
            async for batch in batches:
                if student and any(event.event_type.startswith("student_link.") for event in batch):
                    if not await student_still_opens(self.scope, self.target.instance_id):
                        await self._refuse(CLOSE_LINK_ENDED, "Your link to this lab is no longer valid.",
                                           kind="closed")
                        return
                if not any(event.event_type.startswith("lablet_instance.") for event in batch):
                    continue
                if await target_of(self.target.instance_id, self.target.name) != self.target:
                    await self._refuse(CLOSE_TORN_DOWN, f"{self.target.instance_id} was torn down.", kind="closed")
                    return

    async def _refuse(self, code: int, detail: str, *, kind: str = "error"):
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(Exception):
            await self.send(json.dumps({"type": kind, "detail": detail, "code": code}))
        await self.close(code=code)
