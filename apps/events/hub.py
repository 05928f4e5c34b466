"""The per-process fan-out: ONE journal tail per ASGI process, one asyncio queue per subscriber.

The journal is the single source of truth for the live streams, in both deployments:

- the tail reads `sequence_num > last` (the unique index), in order, at most every LIVE_TAIL_INTERVAL
  seconds and at once when rung: the "doorbell" is one channel of this process in the Channels group
  `events`, where apps/audit/publish.py sends every sealed event. With REDIS_URL the doorbell rings
  for events of every process (q cluster included); with the in-memory layer only for this process's own
  events, and the interval poll brings the others;
- sequence numbers become visible in order (seals are serialised: see apps/audit/services.py), so a
  tail that reads `> last` in order never skips one; each subscriber gets events in sequence order.

A subscriber resuming after `Last-Event-ID` registers first (its queue fills from the tail's position),
replays the journal after its id in chunks, then drains its queue dropping what it already sent.
"""

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from apps.events.payload import COLUMNS, LiveEvent
from apps.audit.publish import LIVE_GROUP
from apps.events.stats import STATS

log = logging.getLogger(__name__)
GROUP = LIVE_GROUP
TAIL_BATCH = 1000
REPLAY_CHUNK = 500
OVERFLOW = object()
ACCESS_CHANGED = object()


def tail_interval() -> float:
    return float(settings.LIVE_TAIL_INTERVAL)


def queue_max() -> int:
    return int(settings.LIVE_QUEUE_MAX)


# --- journal reads (synchronous: run in a thread) -------------------------------------------------

def head_sequence() -> int:
    from apps.audit.models import AuditEvent

    head = (AuditEvent.objects.filter(sequence_num__isnull=False).order_by("-sequence_num")
            .values_list("sequence_num", flat=True).first())
    return head or 0


def fetch_events(after: int, limit: int) -> list[LiveEvent]:
    """Sealed events after `after`, in order: one indexed query, plus one per owned resource type in the
    batch (who created the instance / owns the session, for the instructors' filter)."""
    from apps.audit.models import AuditEvent

    rows = list(AuditEvent.objects.filter(sequence_num__gt=after).order_by("sequence_num").values(*COLUMNS)[:limit])
    events = [LiveEvent(row) for row in rows]
    _resolve_owners(events)
    return events


def access_changed_between(username: str, after: int, upto: int) -> bool:
    """Whether the journal holds a change of `username`'s rights in (after, upto] (the resource index)."""
    from apps.audit.models import AuditEvent
    from apps.identity.services_provider import ACCESS_CHANGED_EVENTS

    return AuditEvent.objects.filter(resource_type="user", resource_id=username, event_type__in=ACCESS_CHANGED_EVENTS,
                                     sequence_num__gt=after, sequence_num__lte=upto).exists()


def _resolve_owners(events: list[LiveEvent]) -> None:
    by_type: dict[str, set[str]] = {}
    for event in events:
        if event.resource_type in ("lablet_instance", "session"):
            by_type.setdefault(event.resource_type, set()).add(event.resource_id)
    owners: dict[tuple[str, str], int | None] = {}
    if "lablet_instance" in by_type:
        from apps.lablets.models import LabletInstance

        for public_id, creator in LabletInstance.objects.filter(public_id__in=by_type["lablet_instance"]).values_list(
                "public_id", "created_by_id"):
            owners[("lablet_instance", public_id)] = creator
    if "session" in by_type:
        owners.update(_session_owners(by_type["session"]))
    for event in events:
        event.owner_pk = owners.get((event.resource_type, event.resource_id))


def _session_owners(ids: set[str]) -> dict:
    import uuid

    from apps.sessions.models import Session  # here: sessions sits above audit
    valid = []
    for value in ids:
        with contextlib.suppress(ValueError):
            valid.append(uuid.UUID(value))
    return {("session", str(pk)): owner for pk, owner in
            Session.objects.filter(pk__in=valid).values_list("pk", "owner_id")}


def _with_reset(function, *args):
    """Run a read; on error, drop the thread's connection so the next call reconnects."""
    try:
        return function(*args)
    except Exception:
        connection.close()
        raise


def _close_connection() -> None:
    """Close the calling thread's connection. (Not `connection.close` passed as a callable: that binds the
    connection of the thread that looks the attribute up, not of the thread that runs it.)"""
    connection.close()


def _one_shot(function, *args):
    """A read in a throw-away thread: its connection is closed at once (replays are rare and short)."""
    try:
        return function(*args)
    finally:
        connection.close()


# --- the hub ---------------------------------------------------------------------------------------

class Hub:
    """One per event loop (one per daphne process). Runs while it has subscribers."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.subscribers: set[Subscription] = set()
        self.last_seq = 0
        self.wake = asyncio.Event()
        self.ready: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.bell: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="live-tail")

    async def add(self, subscription: "Subscription") -> int:
        """Register; returns the tail position from which the subscriber's queue is complete."""
        self.subscribers.add(subscription)
        if self.task is None:
            self.ready = self.loop.create_future()
            self.task = self.loop.create_task(self._run())
        await asyncio.shield(self.ready)
        return self.last_seq

    def remove(self, subscription: "Subscription") -> None:
        self.subscribers.discard(subscription)
        if not self.subscribers:
            self.wake.set()  # let the tail notice and stop

    async def _run(self) -> None:
        try:
            self.last_seq = await self.loop.run_in_executor(self.executor, _with_reset, head_sequence)
        except Exception as error:
            log.warning("Live tail could not read the journal head", exc_info=True)
            self.ready.set_exception(error)
            self.ready.exception()  # mark retrieved
            self.task = None
            self.subscribers.clear()
            return
        self.ready.set_result(self.last_seq)
        self.bell = self.loop.create_task(self._doorbell())
        interval = tail_interval()
        try:
            while self.subscribers:
                self.wake.clear()
                try:
                    events = await self.loop.run_in_executor(self.executor, _with_reset, fetch_events,
                                                             self.last_seq, TAIL_BATCH)
                except Exception:
                    log.warning("Live tail query failed", exc_info=True)
                    events = []
                STATS["tail_queries"] += 1
                if events:
                    self.last_seq = events[-1].sequence
                    self._fan_out(events)
                    if len(events) == TAIL_BATCH:
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), interval)
        finally:
            # No await before these: a subscriber arriving now must start a new tail, not join this one.
            self.task = None
            if self.bell is not None:
                self.bell.cancel()
                self.bell = None
            self.executor.submit(_close_connection)  # the tail thread's own connection

    def _fan_out(self, events: list[LiveEvent]) -> None:
        for subscription in list(self.subscribers):
            subscription.offer(events)
        STATS["last_sequence"] = self.last_seq
        STATS["events_fanned_out"] += len(events)
        STATS["last_delivery_lag_seconds"] = round(time.time() - events[-1].timestamp.timestamp(), 4)

    async def _doorbell(self) -> None:
        """Wake the tail whenever the Channels group `events` carries something (any process, with Redis)."""
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        channel = None
        try:
            channel = await layer.new_channel()
            while True:
                await layer.group_add(GROUP, channel)  # refreshed: group membership expires (group_expiry)
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    try:
                        await asyncio.wait_for(layer.receive(channel), 60)
                    except TimeoutError:
                        continue
                    self.wake.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("Live doorbell stopped; the tail polls every %.1f s", tail_interval(), exc_info=True)
        finally:
            if channel is not None:
                with contextlib.suppress(Exception):
                    self.loop.create_task(layer.group_discard(GROUP, channel))


_hubs: dict[int, Hub] = {}


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(id(loop))
    if hub is None or hub.loop is not loop:
        for key in [k for k, h in _hubs.items() if h.loop.is_closed()]:
            _hubs.pop(key).executor.shutdown(wait=False)
        hub = _hubs[id(loop)] = Hub(loop)
    return hub


# --- a subscriber ----------------------------------------------------------------------------------

class Subscription:
    """One SSE or WebSocket client: what it may see (viewer), what it asked for (filters), its queue."""

    def __init__(self, *, viewer, filters):
        self.viewer = viewer
        self.filters = filters
        self.queue: asyncio.Queue = asyncio.Queue()
        self.last_sent = 0
        self.overflowed = False
        self.access_changed = False  # the journal says the viewer's rights changed: the stream ends

    def wants(self, event: LiveEvent) -> bool:
        return self.viewer.can_see(event) and self.filters.match(event)

    def offer(self, events: list[LiveEvent]) -> None:
        if self.overflowed or self.access_changed:
            return
        for event in events:
            if self.viewer.access_changed_by(event):  # what came before it is sent, then the stream ends
                self.access_changed = True
                self.queue.put_nowait(ACCESS_CHANGED)
                return
            if self.wants(event):
                self.queue.put_nowait(event)
        if self.queue.qsize() > queue_max():  # a client that does not read: cut it, it resumes by id
            self.overflowed = True
            STATS["dropped_slow_subscribers"] += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(OVERFLOW)

    async def batches(self, *, last_event_id: int | None = None, keepalive: float | None = None):
        """Async iterator of lists of events, in sequence order, without gaps or duplicates; an empty list
        when `keepalive` seconds pass without one. Ends if the client fell too far behind, or after the events
        before a change of the viewer's rights (`access_changed`)."""
        hub = get_hub()
        try:
            position = await hub.add(self)
            if position > self.viewer.as_of and await sync_to_async(_one_shot, thread_sensitive=False)(
                    access_changed_between, self.viewer.username, self.viewer.as_of, position):
                self.access_changed = True  # changed while the stream was opening: the tail passed it already
                return
            if last_event_id is not None:
                async for batch in self._replay(last_event_id):
                    yield batch
            while True:
                try:
                    async with asyncio.timeout(keepalive):  # (wait_for would wrap each get in a new task)
                        first = await self.queue.get()
                except TimeoutError:
                    yield []
                    continue
                items = [first]
                while not self.queue.empty() and len(items) < 500:
                    items.append(self.queue.get_nowait())
                if OVERFLOW in items:
                    return
                ended = ACCESS_CHANGED in items
                if ended:
                    items = items[:items.index(ACCESS_CHANGED)]
                batch = [event for event in items if event.sequence > self.last_sent]
                if batch:
                    self.last_sent = batch[-1].sequence
                    yield batch
                if ended:
                    return
        finally:
            hub.remove(self)

    async def _replay(self, last_event_id: int):
        after = last_event_id
        read = sync_to_async(_one_shot, thread_sensitive=False)
        while True:
            events = await read(fetch_events, after, REPLAY_CHUNK)
            if not events and after == last_event_id:
                # Nothing after the client's id: never trust an id beyond the journal's head.
                after = min(after, await read(head_sequence))
            if events:
                after = events[-1].sequence
                wanted = [event for event in events if self.wants(event)]
                self.last_sent = after
                if wanted:
                    yield wanted
            if len(events) < REPLAY_CHUNK:
                break
        self.last_sent = after
