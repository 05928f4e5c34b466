"""With REDIS_URL, an event committed in another process reaches the server over channels_redis at once,
not at the server's next journal poll (here set to a minute)."""

import time

import pytest
from django.conf import settings

from tests.conftest import client_for
from tests.events.conftest import SseReader, server_process, sse_stream, write_events

pytestmark = [
    pytest.mark.skipif(not settings.REDIS_URL, reason="the channels_redis path: needs REDIS_URL"),
    pytest.mark.django_db(transaction=True),
]


def test_an_event_from_another_process_rings_the_server_through_redis(django_db_setup, admin_user):
    key = client_for(admin_user).raw_key
    with server_process({"LIVE_TAIL_INTERVAL": "60"}) as url, sse_stream(url, key) as response:
        reader = SseReader(response)
        reader.wait_connected()
        time.sleep(1.0)  # the server's doorbell joins the Channels group right after its first tail query
        seqs = write_events("worker", "wrk-redis", "worker.running", "worker.stopping")
        written = time.monotonic()
        got = [reader.next_event(timeout=20), reader.next_event(timeout=20)]
        arrived = time.monotonic()

    assert [m["id"] for m in got] == seqs
    assert arrived - written < 5, "delivered by the Redis group message, not by the 60 s journal poll"
