"""With REDIS_URL, an event committed in another process reaches the server over channels_redis at once,
not at the server's next journal poll (here set to a minute)."""

import time

import pytest
from django.conf import settings

from apps.audit.publish import LIVE_GROUP
from tests.conftest import client_for
from tests.events.conftest import SseReader, server_process, sse_stream, write_events
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="the channels_redis path: needs REDIS_URL"),
    pytest.mark.django_db(transaction=True),
]


def doorbells() -> set[bytes]:
    """The channels in the Channels group the sealed events are sent to (channels_redis: a sorted set)."""
    import redis

    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    with redis.Redis.from_url(settings.REDIS_URL) as client:
        return set(client.zrange(f"{prefix}:group:{LIVE_GROUP}", 0, -1))


def test_an_event_from_another_process_rings_the_server_through_redis(django_db_setup, admin_user):
    key = client_for(admin_user).raw_key
    earlier = doorbells()  # of servers before this one (a killed server leaves its channel until it expires)
    with server_process({"LIVE_TAIL_INTERVAL": "60"}) as url, sse_stream(url, key) as response:
        reader = SseReader(response)
        reader.wait_connected()
        # the server's doorbell joins the group right after its first tail query: once it is there
        wait_until(lambda: doorbells() - earlier, timeout=20, what="the server's doorbell to join the group")
        seqs = write_events("worker", "wrk-redis", "worker.running", "worker.stopping")
        written = time.monotonic()
        got = [reader.next_event(timeout=20), reader.next_event(timeout=20)]
        arrived = time.monotonic()

    assert [m["id"] for m in got] == seqs
    assert arrived - written < 5, "delivered by the Redis group message, not by the 60 s journal poll"
