"""Through the production servers (nginx, gunicorn, daphne: bin/serve all): SSE read by httpx and WebSocket by `websockets`, events written by another process."""

import asyncio
import json

import httpx
import pytest
import websockets

from tests.conftest import client_for
from tests.events.conftest import SseReader, sse_stream, write_events

pytestmark = pytest.mark.django_db(transaction=True)


def test_event_from_another_process_reaches_sse_client_and_resumes_without_gap(daphne_url, admin_user):
    key = client_for(admin_user).raw_key
    with sse_stream(daphne_url, key) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert "x-accel-buffering" not in response.headers  # read by nginx (no buffering), not passed on
        reader = SseReader(response)
        reader.wait_connected()
        first = write_events("worker", "wrk-live1", "worker.pending", "worker.running", "worker.stopping")
        got = [reader.next_event() for _ in first]
    assert [m["id"] for m in got] == first
    assert [m["event"] for m in got] == ["worker_status"] * 3
    assert got[1]["data"]["type"] == "io.lablet.worker.running"
    assert got[1]["data"]["event_type"] == "worker.running"
    assert got[1]["data"]["resource"] == {"type": "worker", "id": "wrk-live1"}
    assert got[1]["data"]["id"] == first[1]
    # Disconnected after the 2nd... say the client only processed up to first[1]; more is written meanwhile.
    missed = write_events("lablet_instance", "inst-x", "lablet_instance.scheduled", "lablet_instance.running")
    with sse_stream(daphne_url, key, headers={"Last-Event-ID": str(first[1])}) as response:
        reader = SseReader(response)
        replayed = [reader.next_event() for _ in range(3)]
        assert [m["id"] for m in replayed] == [first[2], *missed]
        assert replayed[1]["event"] == "lablet_instance_status"
        assert replayed[1]["data"]["type"] == "io.lablet.instance.scheduled"
        live = write_events("session", "sess-1", "session.activated")
        after = reader.next_event()
        assert after["id"] == live[0]  # straight after the replay: no gap, no duplicate
        assert after["event"] == "session_status" and after["data"]["type"] == "io.lablet.session.activated"


def test_sse_filters_and_query_resume(daphne_url, operator_user):
    key = client_for(operator_user).raw_key
    base = write_events("worker", "wrk-a", "worker.pending")[0]
    with sse_stream(daphne_url, key, worker_ids="wrk-b,wrk-c", event_types="worker.running,worker.stopped",
                 last_event_id=str(base)) as response:
        reader = SseReader(response)
        seqs = write_events("worker", "wrk-a", "worker.running")  # other worker
        seqs += write_events("worker", "wrk-b", "worker.pending", "worker.running")  # other type, then wanted
        got = reader.next_event()
    assert got["id"] == seqs[2] and got["data"]["resource"]["id"] == "wrk-b"


def test_sse_refuses_without_credentials(daphne_url, db):
    response = httpx.get(daphne_url + "/api/events/stream", timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    response = httpx.get(daphne_url + "/api/events/stream", headers={"X-API-Key": "lm_nope"}, timeout=10)
    assert response.status_code == 401


def test_websocket_subscribe_ping_and_resume_through_daphne(daphne_url, admin_user):
    key = client_for(admin_user).raw_key
    before = write_events("worker", "wrk-ws", "worker.pending", "worker.running")
    ws_url = daphne_url.replace("http://", "ws://") + "/ws/events"

    async def scenario():
        async with websockets.connect(ws_url, origin="http://127.0.0.1", open_timeout=10,
                                      subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            await ws.send(json.dumps({"type": "subscribe", "worker_ids": ["wrk-ws"], "last_event_id": before[0]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            replayed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            live_ids = await asyncio.to_thread(write_events, "worker", "wrk-ws", "worker.stopping")
            live = json.loads(await asyncio.wait_for(ws.recv(), 15))
            return replayed, live, live_ids

    replayed, live, live_ids = asyncio.run(scenario())
    assert replayed["type"] == "event" and replayed["id"] == before[1] and replayed["event"] == "worker_status"
    assert replayed["data"]["type"] == "io.lablet.worker.running"
    assert live["id"] == live_ids[0]


def test_websocket_refuses_a_bad_key_at_the_handshake(daphne_url, db):
    # Without any credential the socket is accepted and waits for one (tests/events/test_websocket_auth.py).
    ws_url = daphne_url.replace("http://", "ws://") + "/ws/events"

    async def scenario():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(ws_url, origin="http://127.0.0.1", open_timeout=10,
                                          additional_headers={"X-API-Key": "lm_nope"}):
                pass
        return refused.value.response.status_code

    assert asyncio.run(scenario()) == 403


def test_sse_instance_ids_follows_one_instance_and_an_instructor_only_their_own(daphne_url, instructor_user,
                                                                                 admin_user):
    from tests.events.conftest import write_mixed
    from tests.factories import LabletInstanceFactory

    mine = LabletInstanceFactory(created_by=instructor_user)
    theirs = LabletInstanceFactory(created_by=admin_user)
    events = (("lablet_instance", theirs.public_id, "lablet_instance.scheduled"),  # not the instructor's
              ("worker", "wrk-inst", "worker.running"),  # instructors see workers: filtered out by instance_ids
              ("lablet_instance", "inst-unasked", "lablet_instance.running"),
              ("lablet_instance", mine.public_id, "lablet_instance.running"))
    base = write_events("worker", "wrk-inst", "worker.pending")[0]
    wanted = f"{mine.public_id},{theirs.public_id}"
    with sse_stream(daphne_url, client_for(instructor_user).raw_key, instance_ids=wanted) as response:
        reader = SseReader(response)
        reader.wait_connected()
        seqs = write_mixed(*events)
        got = reader.next_event()
    assert got["id"] == seqs[3] and got["event"] == "lablet_instance_status"
    assert got["data"]["data"]["instance_id"] == mine.public_id
    # An admin asking for the other instance gets it, and nothing else, replayed from the journal.
    with sse_stream(daphne_url, client_for(admin_user).raw_key, instance_ids=theirs.public_id,
                    last_event_id=str(base)) as response:
        got = SseReader(response).next_event()
    assert got["id"] == seqs[0] and got["data"]["subject"] == theirs.public_id


def test_sse_carries_the_cloudevent_data_of_every_instance_event(daphne_url, admin_user):
    from tests.factories import walk_an_instance_through_its_life
    from tests.webhooks.test_cloudevent_data import LIFE, expected_ids

    base = write_events("worker", "wrk-ce", "worker.pending")[0]
    instance, worker, lab_id = walk_an_instance_through_its_life()
    with sse_stream(daphne_url, client_for(admin_user).raw_key, instance_ids=instance.public_id,
                    last_event_id=str(base)) as response:
        reader = SseReader(response)
        got = [reader.next_event()["data"] for _ in LIFE]
    assert [m["type"] for m in got] == [f"io.lablet.instance.{verb}" for verb in LIFE]
    ids = [{key: m["data"][key] for key in ("instance_id", "worker_id", "cml_lab_id")} for m in got]
    assert ids == expected_ids(got, instance, worker, lab_id)
    assert all(m["data"]["sequence_num"] == m["id"] for m in got)
