"""Live streams follow the provider (security review of issue 19, finding 5), through the production servers
(bin/serve all: nginx, gunicorn, daphne) pointed at the real OpenID provider (oidc-provider-mock):

- a WebSocket opened with a browser session re-checks that session with the provider when it is due, as HTTP
  requests do (Django's middleware never sees a WebSocket);
- SSE and WebSocket streams already open end when the journal says their user's roles changed or the user was
  deprovisioned (here by the provider sync, in this process: the q cluster's stand-in); a reconnect gets the
  rights the user has now."""

import time
from types import SimpleNamespace

import httpx
import pytest
from django.db import connection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from apps.audit.models import AuditEvent
from apps.identity.roles_from_claims import Profile
from apps.identity.services import api_key_create
from apps.identity.services_provider import identity_user_sync
from tests.events.conftest import SseReader, server_process, sse_stream, write_events
from tests.identity.conftest import CLIENT_ID
from tests.identity.test_browser_login import OPERATOR_CLAIMS, group_names, log_in
from tests.identity.test_provider_accounts import backdate_the_last_check, journal, run_provider_sync, sync_settings  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, oidc_provider):
    env = {"OIDC_ISSUER": oidc_provider.url, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": "dashboard-secret",
           "LOGIN_RATE_LIMIT": "10000/min", "API_ANON_RATE_LIMIT": "10000/min", "LIVE_KEEPALIVE_SECONDS": "1"}
    with server_process(env) as url:
        yield url


def ws_url(server) -> str:
    return server.replace("http://", "ws://") + "/ws/events"


def subscribe(ws) -> dict:
    ws.send('{"type": "subscribe"}')
    return ws_message(ws)


def ws_message(ws, timeout=15.0) -> dict:
    import json

    return json.loads(ws.recv(timeout=timeout))


def closed(ws, timeout=20.0) -> tuple[int | None, list[dict]]:
    """The server's close code and what it sent before (waits at most `timeout`)."""
    messages, deadline = [], time.monotonic() + timeout
    try:
        while True:
            messages.append(ws_message(ws, timeout=max(0.1, deadline - time.monotonic())))
    except ConnectionClosed as done:
        return (done.rcvd.code if done.rcvd else None), messages
    except TimeoutError:
        return None, messages


def read_to_end(reader: SseReader, timeout=20.0) -> bool:
    """Whether the server ended the SSE stream within `timeout` (keep-alives arrive every second meanwhile)."""
    deadline = time.monotonic() + timeout
    for line in reader.lines:
        if line.startswith(":"):
            reader.comments.append(line)
        if time.monotonic() > deadline:
            return False
    return True


@pytest.mark.parametrize("change", ["sessions revoked at the provider", "demoted to instructor"])
def test_a_websocket_opened_with_a_session_rechecks_it_with_the_provider_when_due(server, oidc_provider, change):
    oidc_provider.put_user("wsolga-sub", {**OPERATOR_CLAIMS, "preferred_username": "wsolga"})
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        log_in(browser, SimpleNamespace(url=server), "wsolga-sub")
        cookie = {"Cookie": f"sessionid={browser.cookies['sessionid']}"}
        with connect(ws_url(server), origin="http://127.0.0.1", additional_headers=cookie) as ws:
            assert subscribe(ws)["type"] == "subscribed"  # the session opens the socket
        if change == "demoted to instructor":
            oidc_provider.put_user("wsolga-sub", {**OPERATOR_CLAIMS, "preferred_username": "wsolga",
                                                  "realm_access": {"roles": ["instructor"]}})
        else:  # what deleting or disabling the user does to their refresh tokens in Keycloak
            assert httpx.post(f"{oidc_provider.url}/users/wsolga-sub/revoke-tokens", timeout=5).status_code == 204
        backdate_the_last_check(browser, 900)

        with connect(ws_url(server), origin="http://127.0.0.1", additional_headers=cookie) as ws:
            if change == "demoted to instructor":
                answer, ended = subscribe(ws), None
            else:
                ws.send('{"type": "subscribe"}')
                answer, ended = None, closed(ws)

    if change == "demoted to instructor":
        assert answer["type"] == "subscribed" and group_names("wsolga") == {"instructor"}
        assert journal("user.roles_synced", "wsolga")[-1] == {"via": "session-recheck", "added": ["instructor"],
                                                               "removed": ["operator"]}
    else:
        code, messages = ended
        assert code == 4401 and [m["type"] for m in messages] == ["error"]  # the session ended: anonymous


@pytest.mark.parametrize("change", ["demoted", "deprovisioned"])
def test_open_streams_of_a_user_demoted_or_removed_at_the_provider_end(server, issuer, sync_settings, change):  # noqa: F811
    subject = issuer.subject("streamer")
    issuer.users[subject] = {"username": "streamer", "realm_roles": ["admin"]}
    user = identity_user_sync(issuer=issuer.url, subject=subject, roles=frozenset({"admin"}), via="bearer",
                              profile=Profile(username="streamer", email=None, first_name=None, last_name=None))
    _, key = api_key_create(user=user, actor="tests")

    with sse_stream(server, key) as response, connect(
            ws_url(server), origin="http://127.0.0.1", subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]) as ws:
        assert response.status_code == 200 and subscribe(ws)["type"] == "subscribed"
        reader = SseReader(response)
        reader.wait_connected()
        seq = write_events("worker", "wrk-streams", "worker.running")[0]
        assert reader.next_event()["id"] == seq and ws_message(ws)["id"] == seq  # both streams live
        if change == "demoted":
            issuer.users[subject]["realm_roles"] = ["instructor"]
        else:
            del issuer.users[subject]

        run_provider_sync()
        connection.close()  # this thread's; the servers read the journal
        sse_ended = read_to_end(reader)
        ws_code, ws_messages = closed(ws)

    assert sse_ended and ": access changed: reconnect" in reader.comments
    changed_at = AuditEvent.objects.get(event_type="user.roles_synced", resource_id="streamer", metadata__via="provider-sync")
    assert ws_code == 4409 and ws_messages[-1]["type"] == "error"
    assert all(m["id"] < changed_at.sequence_num for m in ws_messages[:-1])  # what came before the change, only
    again = httpx.get(server + "/api/events/stream", headers={"X-API-Key": key}, timeout=10)
    # The admin key of a user who is an instructor now grants nothing; a deprovisioned user's key is revoked.
    assert again.status_code == (403 if change == "demoted" else 401)
