"""How a WebSocket client of `/ws/events` hands over its credential, through the production servers (bin/serve
all: nginx, daphne): the subprotocol or a first message, never the URL (proxies log URLs) unless
EVENTS_WS_QUERY_TOKEN allows it. docs/events.md#authentication, docs/security.md."""

import asyncio
import json
import time

import pytest
import websockets

from tests.conftest import client_for
from tests.events.conftest import server_process, write_events

pytestmark = pytest.mark.django_db(transaction=True)

AUTH_TIMEOUT = 2.0  # the servers' EVENTS_WS_AUTH_TIMEOUT here (the default is 10 s)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """The default configuration, with a short deadline for the first message."""
    with server_process({"EVENTS_WS_AUTH_TIMEOUT": str(AUTH_TIMEOUT)}) as url:
        yield url.replace("http://", "ws://") + "/ws/events"


@pytest.fixture(scope="module")
def server_with_query_tokens(django_db_setup, django_db_blocker):
    with server_process({"EVENTS_WS_QUERY_TOKEN": "true"}) as url:
        yield url.replace("http://", "ws://") + "/ws/events"


def connect(url, **kwargs):
    return websockets.connect(url, origin="http://127.0.0.1", open_timeout=10, **kwargs)


async def closed(ws, timeout=10.0) -> tuple[int, list[dict]]:
    """Wait for the server to close the socket: its close code and the messages it sent before."""
    messages = []
    try:
        while True:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except websockets.exceptions.ConnectionClosed as done:
        return done.rcvd.code if done.rcvd else None, messages


def test_a_key_offered_as_a_subprotocol_authenticates_and_only_labmanager_v1_is_selected(server, admin_user):
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(server, subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]) as ws:
            selected = ws.subprotocol, ws.response.headers.get_all("Sec-WebSocket-Protocol")
            await ws.send(json.dumps({"type": "subscribe", "worker_ids": ["wrk-subproto"]}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            seqs = await asyncio.to_thread(write_events, "worker", "wrk-subproto", "worker.running")
            event = json.loads(await asyncio.wait_for(ws.recv(), 15))
            return selected, subscribed, event, seqs

    selected, subscribed, event, seqs = asyncio.run(scenario())
    assert selected == ("labmanager.v1", ["labmanager.v1"])  # the key is never echoed
    assert subscribed["type"] == "subscribed"
    assert (event["type"], event["id"]) == ("event", seqs[0])


def test_a_bad_key_offered_as_a_subprotocol_refuses_the_handshake(server, db):
    async def scenario():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with connect(server, subprotocols=["labmanager.v1", "labmanager.bearer.lm_nope"]):
                pass
        return refused.value.response.status_code

    assert asyncio.run(scenario()) == 403


def test_a_key_in_the_first_message_authenticates(server, operator_user):
    key = client_for(operator_user).raw_key

    async def scenario():
        async with connect(server) as ws:
            await ws.send(json.dumps({"type": "auth", "token": key}))
            authenticated = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(json.dumps({"type": "ping"}))
            pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return ws.subprotocol, authenticated, pong

    subprotocol, authenticated, pong = asyncio.run(scenario())
    assert subprotocol is None
    assert authenticated == {"type": "authenticated", "username": operator_user.username}
    assert pong == {"type": "pong"}


def test_a_bad_key_in_the_first_message_closes_with_4401(server, db):
    async def scenario():
        async with connect(server, subprotocols=["labmanager.v1"]) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "lm_nope"}))
            return ws.subprotocol, await closed(ws)

    subprotocol, (code, messages) = asyncio.run(scenario())
    assert subprotocol == "labmanager.v1"
    assert code == 4401
    assert messages == [{"type": "error", "detail": "Invalid API key."}]


def test_anything_but_auth_before_authenticating_closes_with_4401_and_is_not_answered(server, db):
    async def scenario():
        async with connect(server) as ws:
            await ws.send(json.dumps({"type": "subscribe"}))
            await ws.send(json.dumps({"type": "ping"}))
            return await closed(ws)

    code, messages = asyncio.run(scenario())
    assert code == 4401
    assert [m["type"] for m in messages] == ["error"]  # neither subscribed nor pong


def test_a_role_less_key_in_the_first_message_closes_with_4403(server, django_user_model):
    from apps.identity.services import api_key_create

    _, raw = api_key_create(user=django_user_model.objects.create_user("nobody-ws", password="x"), actor="tests")

    async def scenario():
        async with connect(server) as ws:
            await ws.send(json.dumps({"type": "auth", "token": raw}))
            return await closed(ws)

    code, messages = asyncio.run(scenario())
    assert code == 4403
    assert [m["type"] for m in messages] == ["error"]


def test_a_silent_socket_is_closed_at_the_auth_deadline_having_been_sent_nothing(server, db):
    async def scenario():
        async with connect(server) as ws:
            opened = time.monotonic()
            code, messages = await closed(ws, timeout=AUTH_TIMEOUT + 30)
            return code, messages, time.monotonic() - opened

    code, messages, waited = asyncio.run(scenario())
    assert code == 4408
    assert [m["type"] for m in messages] == ["error"]  # the reason, nothing else
    assert waited >= AUTH_TIMEOUT * 0.9


@pytest.mark.parametrize("name", ["token", "api_key"])
def test_a_key_in_the_url_is_refused_by_default(server, admin_user, name):
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(server + f"?{name}={key}") as ws:
            try:
                await ws.send(json.dumps({"type": "ping"}))
            except websockets.exceptions.ConnectionClosed:
                pass  # closed before the ping went out: refused at once (what it said is still read below)
            return await closed(ws)

    code, messages = asyncio.run(scenario())
    assert code == 4400
    assert len(messages) == 1 and "URL" in messages[0]["detail"]  # no pong: refused, not served


def test_a_key_in_the_url_is_accepted_when_events_ws_query_token_allows_it(server_with_query_tokens, admin_user):
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(server_with_query_tokens + f"?token={key}") as ws:
            await ws.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(scenario()) == {"type": "pong"}
