"""Through the production servers (bin/serve all): keep-alive, who sees which events, cookie authentication, and the server's own
live-stream metrics (clients, delivery lag, one journal query per interval per process)."""

import asyncio
import contextlib
import json
import time

import httpx
import pytest
import websockets
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client_for
from tests.events.conftest import KEEPALIVE_SECONDS, SseReader, sse_stream, write_events, write_mixed
from tests.factories import LabletInstanceFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_idle_stream_gets_a_keep_alive_comment_every_period(daphne_url, admin_user):
    key = client_for(admin_user).raw_key
    stamps = []
    with sse_stream(daphne_url, key, event_types="nothing.ever") as response:
        reader = SseReader(response)
        reader.wait_connected()
        deadline = time.monotonic() + 10 * KEEPALIVE_SECONDS
        for line in reader.lines:
            if line == ": keep-alive":
                stamps.append(time.monotonic())
            if len(stamps) == 3 or time.monotonic() > deadline:
                break

    assert len(stamps) == 3
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(0.7 * KEEPALIVE_SECONDS <= gap <= 3 * KEEPALIVE_SECONDS for gap in gaps), gaps


def test_events_of_other_resources_are_named_audit(daphne_url, admin_user):
    key = client_for(admin_user).raw_key
    with sse_stream(daphne_url, key, event_types="audit") as response:
        reader = SseReader(response)
        reader.wait_connected()
        seqs = write_mixed(("worker", "wrk-aud", "worker.running"), ("api_key", "lm_abc", "api_key.created"))
        got = reader.next_event()

    assert (got["id"], got["event"]) == (seqs[1], "audit")
    assert got["data"]["event_type"] == "api_key.created" and got["data"]["type"] == "io.lablet.api_key.created"


def test_an_instructor_stream_carries_only_what_the_instructor_may_see(daphne_url, instructor_user,
                                                                       other_instructor):
    mine = LabletInstanceFactory(created_by=instructor_user)
    theirs = LabletInstanceFactory(created_by=other_instructor)
    key = client_for(instructor_user).raw_key
    with sse_stream(daphne_url, key) as response:
        reader = SseReader(response)
        reader.wait_connected()
        seqs = write_mixed(
            ("lablet_instance", theirs.public_id, "lablet_instance.running"),
            ("api_key", "lm_other", "api_key.created"),
            ("lablet_definition", "ldf-1", "lablet_definition.created"),
            ("lablet_instance", mine.public_id, "lablet_instance.running"),
            ("worker", "wrk-inst", "worker.running"),
        )
        got = [reader.next_event(), reader.next_event()]

    assert [(m["id"], m["event"]) for m in got] == [(seqs[3], "lablet_instance_status"), (seqs[4], "worker_status")]
    assert got[0]["data"]["resource"] == {"type": "lablet_instance", "id": mine.public_id}


def test_a_browser_session_cookie_authenticates_sse_and_websocket(daphne_url, instructor_user):
    browser = Client()
    browser.force_login(instructor_user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"

    with sse_stream(daphne_url, None, headers={"Cookie": cookie}) as response:
        assert response.status_code == 200
        reader = SseReader(response)
        reader.wait_connected()
        seqs = write_events("worker", "wrk-cookie", "worker.running")
        got = reader.next_event()
    assert got["id"] == seqs[0]

    async def websocket():
        ws_url = daphne_url.replace("http://", "ws://") + "/ws/events"
        async with websockets.connect(ws_url, origin="http://127.0.0.1", open_timeout=10,
                                      additional_headers={"Cookie": cookie}) as ws:
            await ws.send(json.dumps({"type": "subscribe", "last_event_id": seqs[0] - 1, "worker_ids": ["wrk-cookie"]}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            replayed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return subscribed, replayed

    subscribed, replayed = asyncio.run(websocket())
    assert subscribed["type"] == "subscribed" and subscribed["worker_ids"] == ["wrk-cookie"]
    assert (replayed["type"], replayed["id"]) == ("event", seqs[0])


def test_a_stale_session_cookie_is_refused(daphne_url, db):
    response = httpx.get(daphne_url + "/api/events/stream", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}=nope"},
                         timeout=10)
    assert response.status_code == 401


def _metrics(text: str) -> dict:
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def test_the_servers_metrics_count_its_clients_its_lag_and_one_journal_query_per_interval(daphne_url, admin_user):
    key = client_for(admin_user).raw_key
    interval = settings.LIVE_TAIL_INTERVAL  # the server's too: its environment does not change it
    subscribers, tails = 5, 4

    async def scenario():
        async with httpx.AsyncClient(base_url=daphne_url, timeout=20) as client, contextlib.AsyncExitStack() as stack:
            async def scrape():
                # The live figures are daphne's (the streams' server): its own /metrics, as Prometheus scrapes it.
                return _metrics((await client.get(daphne_url.asgi + "/metrics")).text)

            streams = []
            for _ in range(subscribers):
                response = await stack.enter_async_context(
                    client.stream("GET", "/api/events/stream", headers={"X-API-Key": key}))
                lines = response.aiter_lines()
                while await asyncio.wait_for(anext(lines), 10) != ": connected":
                    pass
                streams.append(lines)
            ws_url = daphne_url.replace("http://", "ws://") + "/ws/events"
            for _ in range(2):
                await stack.enter_async_context(websockets.connect(
                    ws_url, origin="http://127.0.0.1", subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]))
            deadline = time.monotonic() + 10  # earlier tests' clients may take a moment to be gone
            while ((before := await scrape())["labmanager_live_sse_clients"], before["labmanager_live_websocket_clients"]) \
                    != (subscribers, 2):
                assert time.monotonic() < deadline, before
                await asyncio.sleep(0.2)
            # Until the tail has queried `tails` more times (not a fixed window): one tail per process takes
            # about `tails` intervals for that, one per subscriber would take a fifth of it.
            started = time.monotonic()
            while (after := await scrape())["labmanager_live_tail_queries_total"] \
                    < before["labmanager_live_tail_queries_total"] + tails:
                assert time.monotonic() < started + 10 * tails * interval + 10, (before, after)
                await asyncio.sleep(interval / 4)  # the poll interval
            window = time.monotonic() - started
            seqs = await asyncio.to_thread(write_events, "worker", "wrk-metrics", "worker.running")
            for lines in streams:  # every subscriber gets it
                while not (line := await asyncio.wait_for(anext(lines), 15)).startswith("data: "):
                    pass
                assert json.loads(line[6:])["id"] == seqs[0]
            delivered = await scrape()
        return before, after, window, delivered, seqs

    before, after, window, delivered, seqs = asyncio.run(scenario())

    assert (before["labmanager_live_sse_clients"], before["labmanager_live_websocket_clients"]) == (subscribers, 2)
    queries = after["labmanager_live_tail_queries_total"] - before["labmanager_live_tail_queries_total"]
    assert tails <= queries <= window / interval + 2, ("one tail per process, not one per subscriber", queries, window)
    assert delivered["labmanager_live_last_sequence"] == seqs[0]
    assert 0 <= delivered["labmanager_live_event_delivery_lag_seconds"] < 10
    assert delivered["labmanager_live_events_fanned_out_total"] >= 1
    assert "labmanager_audit_chain_length" in delivered


@pytest.mark.skipif(not settings.IS_POSTGRES, reason="counts PostgreSQL connections")
def test_open_streams_hold_no_database_connection(daphne_url, admin_user):
    from django.db import connection

    key = client_for(admin_user).raw_key
    database = settings.DATABASES["default"]["NAME"]

    def server_connections() -> int:
        try:
            with connection.cursor() as cursor:  # ours is excluded: pg_backend_pid()
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                               [database])
                return cursor.fetchone()[0]
        finally:
            connection.close()  # this worker thread's connection

    async def scenario():
        async with httpx.AsyncClient(base_url=daphne_url, timeout=20) as client, contextlib.AsyncExitStack() as stack:
            async def open_one():
                response = await stack.enter_async_context(
                    client.stream("GET", "/api/events/stream", headers={"X-API-Key": key}))
                lines = response.aiter_lines()
                while await asyncio.wait_for(anext(lines), 15) != ": connected":
                    pass
                return lines

            ws_url = daphne_url.replace("http://", "ws://") + "/ws/events"
            sockets = [await stack.enter_async_context(websockets.connect(
                ws_url, origin="http://127.0.0.1", subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]))
                       for _ in range(5)]
            for ws in sockets:
                await ws.send(json.dumps({"type": "subscribe"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            async def tail_queries() -> float:
                return _metrics((await client.get(daphne_url.asgi + "/metrics")).text)["labmanager_live_tail_queries_total"]

            streams = await asyncio.gather(*(open_one() for _ in range(20)))  # all at once
            # Settled: the server's tail has queried twice with every client open (a whole interval of the
            # server's own work, not a guess at a second).
            first, deadline = await tail_queries(), time.monotonic() + 30
            while await tail_queries() < first + 2:
                assert time.monotonic() < deadline, "the server's tail stopped querying"
                await asyncio.sleep(0.05)  # the poll interval
            return len(streams), await asyncio.to_thread(server_connections)

    # The HTTP pool's threads keep their connections between requests (CONN_MAX_AGE; labmanager/asgi.py):
    # those were open before the streams, and streams do not go through the pool.
    before = server_connections()
    opened, held = asyncio.run(scenario())

    assert opened == 20
    assert held - before <= 2, "the server's journal tail (and at most one straggler), not one per client"
