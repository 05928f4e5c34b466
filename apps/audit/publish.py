"""What a seal hands out: each sealed event goes to the live streams' Channels group and to the webhook
subscriptions (apps/audit/services.py calls `deliver` after the seal commits; docs/events.md)."""

import asyncio
import logging
import os
import threading

from django.dispatch import Signal

log = logging.getLogger(__name__)
# Sent with `events` (the sealed AuditEvent rows) after each seal's live publication: the webhooks app
# receives it (apps.webhooks.apps) to queue its deliveries. A receiver must not raise.
events_sealed = Signal()
LIVE_GROUP = "events"  # the Channels group every sealed event is sent to (apps/events/hub.py listens)
PUBLISH_CONCURRENCY = 100  # group sends in flight at once (channels_redis: one round trip each)
# A seal of more events than this rings the doorbell once (an `event.batch` message), not once per event:
# the live tails read the journal when rung and never use a message's content, and one group send per
# event cost channels_redis seconds for a reaping of 100,000 sessions (docs/performance.md).
PUBLISH_EACH_MAX = 100


def deliver(events: list) -> None:
    """Sealed events go out: to the live streams (channel layer), then to `events_sealed`'s receivers (the
    webhook subscriptions: deliveries queued as django-q2 tasks; what they miss, the catch-up schedule
    delivers)."""
    _publish_many(events)
    for receiver, outcome in events_sealed.send_robust(sender=None, events=events):
        if isinstance(outcome, Exception):  # the seal is committed; the catch-up schedule delivers what is missed
            log.error("A receiver of the sealed events failed (%s): %r", receiver, outcome)


def _publish_many(events: list) -> None:
    """Send each sealed event to the Channels group `events` (the live streams' doorbell: docs/events.md);
    a large seal (more than PUBLISH_EACH_MAX events) sends one `event.batch` message for all of them.

    In-memory layer: only this process can listen, so nothing is sent unless it does (a daphne process
    with live clients; never a q cluster worker), and it is sent on this process's own event loop.
    Other layers (channels_redis): from a loop thread kept for the process, so that the layer's
    connections are reused, not opened on a new event loop per commit."""
    from asgiref.sync import async_to_sync
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer()
    if layer is None or not events:
        return
    in_memory = isinstance(layer, InMemoryChannelLayer)
    if in_memory and not layer.groups.get(LIVE_GROUP):
        return

    async def send_all():
        if len(events) > PUBLISH_EACH_MAX:
            await layer.group_send(LIVE_GROUP, _batch_message(events))
            return
        for start in range(0, len(events), PUBLISH_CONCURRENCY):  # in order, a hundred at a time
            await asyncio.gather(*(layer.group_send(LIVE_GROUP, _message(event))
                                   for event in events[start:start + PUBLISH_CONCURRENCY]))

    try:
        if in_memory:
            async_to_sync(send_all)()
        else:
            _publisher().run(send_all)
    except Exception:  # a live-stream hiccup must never undo or fail a committed change
        log.warning("Could not publish %d event(s) from #%s", len(events), events[0].sequence_num, exc_info=True)


class _Publisher:
    """An event loop in a daemon thread of this process, for the channel layer's sends."""

    TIMEOUT = 10.0

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="audit-publisher", daemon=True).start()

    def run(self, coroutine_function) -> None:
        asyncio.run_coroutine_threadsafe(coroutine_function(), self.loop).result(self.TIMEOUT)


_publisher_instance: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    """The process's publisher (a new one in a forked child: threads do not survive fork)."""
    global _publisher_instance
    with _publisher_lock:
        if _publisher_instance is None or _publisher_instance.pid != os.getpid():
            _publisher_instance = _Publisher()
        return _publisher_instance


def _message(event) -> dict:
    return {
        "type": "event.message",
        "id": event.pk,
        "sequence_num": event.sequence_num,
        "event_type": event.event_type,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "action": event.action,
        "metadata": event.metadata,
        "timestamp": event.timestamp.isoformat(),
    }


def _batch_message(events: list) -> dict:
    """One doorbell ring for a large seal: which sequence numbers it covers (the journal holds the events)."""
    return {
        "type": "event.batch",
        "first_sequence_num": events[0].sequence_num,
        "last_sequence_num": events[-1].sequence_num,
        "count": len(events),
    }
