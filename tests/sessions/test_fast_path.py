"""The remote-lab fast path (apps/sessions/api/fast.py) through real daphne processes on the test database:

- what it serves answers exactly as Django does: the same status, body and header names as a server with
  SESSION_FAST_PATH=false, for anonymous clients and API keys;
- what it must not answer (unknown sessions, bad credentials, provider tokens, browser sessions, other
  queries, full queues, rate limits, due maintenance) Django answers, as before;
- concurrent POST /session gathered into batches keep strict FIFO order, and each journal row keeps its
  own request's trace id and address.
The servers' /metrics counters (labmanager_remote_lab_fast_path_total) tell which path answered.
"""

import asyncio
import re
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent
from apps.sessions.models import Session, SessionPool
from labmanager.services import api_key_create
from tests.daphne import remote_lab_env
from tests.events.conftest import daphne_process

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/remote-lab"
# Headers whose values differ per response, or that daphne adds to every response.
DYNAMIC = {"x-trace-id", "x-ratelimit-remaining", "x-ratelimit-reset", "date", "server", "content-length"}


@pytest.fixture(scope="module")
def servers(django_db_setup, cml_sim, tmp_path_factory):
    """Three daphne processes: the fast path on (`fast`), off (`plain`), and on with a queue of 2 and a
    rate limit of 4 requests a minute (`strict`)."""
    env = remote_lab_env(cml_sim=cml_sim, storage_dir=tmp_path_factory.mktemp("server-files"))
    with (daphne_process(env) as fast, daphne_process({**env, "SESSION_FAST_PATH": "false"}) as plain,
          daphne_process({**env, "SESSION_QUEUE_MAX": "2", "SESSION_API_RATE_LIMIT": "4/min"}) as strict):
        yield {"fast": fast, "plain": plain, "strict": strict}


def counts(url: str) -> dict[tuple[str, str], float]:
    """{(endpoint, outcome): requests} of a server's fast path, from its /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(endpoint, outcome): float(value) for endpoint, outcome, value in re.findall(
        r'^labmanager_remote_lab_fast_path_total\{endpoint="(\w+)",outcome="(\w+)"\} (\S+)$', text, re.M)}


class Path:
    """Tells which path answered the requests made inside the block: `served` and `passed_on` per endpoint."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        self.before = counts(self.url)
        return self

    def __exit__(self, *exc_info):
        after = counts(self.url)
        self.delta = {key: after[key] - self.before.get(key, 0) for key in after if after[key] != self.before.get(key, 0)}

    def served(self, endpoint: str) -> float:
        return self.delta.get((endpoint, "served"), 0)

    def passed_on(self, endpoint: str) -> float:
        return self.delta.get((endpoint, "passed_on"), 0)


def maintained(session_id: str, url: str, headers: dict | None = None):
    """A first poll of a pool runs its maintenance pass in Django; polls are served after it."""
    assert httpx.get(f"{url}{API}/session/{session_id}", headers=headers).status_code == 200
    assert SessionPool.objects.get(name="default").maintained_at is not None


def header_names(response: httpx.Response) -> set[str]:
    return {name.lower() for name in response.headers} - DYNAMIC


def api_key_for(username: str, *, staff: bool = False) -> str:
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username)
    if staff:
        user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return api_key_create(user=user)[1]


@pytest.mark.parametrize("credentials", ["anonymous", "api key"])
def test_served_answers_are_djangos(servers, credentials):
    headers = {"X-API-Key": api_key_for("alice")} if credentials == "api key" else {}
    answers = {}
    for name in ("plain", "fast"):
        url = servers[name]
        with Path(servers["fast"]) as path:
            created = httpx.post(f"{url}{API}/session", headers=headers)
            session_id = created.json()["session_id"]
            maintained(session_id, url, headers)
            polled = httpx.get(f"{url}{API}/session/{session_id}", headers=headers)
            beat = httpx.post(f"{url}{API}/session/heartbeat", headers={**headers, "X-Session-ID": session_id})
            healthz = httpx.get(f"{url}{API}/healthz")
        answers[name] = (created, polled, beat, healthz)
        if name == "fast":  # the plain server's first poll ran the pool's maintenance pass
            assert path.delta == {("create", "served"): 1, ("poll", "served"): 2, ("heartbeat", "served"): 1,
                                  ("healthz", "served"): 1}
        else:
            assert path.delta == {}  # nothing reached the fast server
    for plain, fast in zip(answers["plain"], answers["fast"]):
        assert fast.status_code == plain.status_code, fast.request.url
        assert header_names(fast) == header_names(plain), fast.request.url
        for name in ("content-type", "allow", "vary", "x-ratelimit-limit", "x-frame-options", "referrer-policy"):
            assert fast.headers.get(name) == plain.headers.get(name), (name, fast.request.url)
        assert re.fullmatch(r"[0-9a-f]{32}", fast.headers["x-trace-id"])
    created, polled = answers["fast"][0].json(), answers["fast"][1].json()
    assert list(created) == ["session_id", "position"] and uuid.UUID(created["session_id"]).version == 4
    plain_polled = answers["plain"][1].json()
    assert list(polled) == list(plain_polled)
    same = {"created_at": None, "last_seen_at": None, "position": None}
    assert {**polled, **same} == {**plain_polled, **same}
    assert polled["status"] == "waiting" and polled["position"] == 2  # behind the plain server's session
    assert plain_polled["position"] == 1 and polled["estimated_wait_seconds"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", polled["created_at"])
    session = Session.objects.get(pk=created["session_id"])
    assert session.position == 2 and session.client_ip == "127.0.0.1"
    if credentials == "api key":
        assert session.owner.username == "alice" and session.actor.startswith("alice (apikey:lm_")
    else:
        assert session.owner is None and session.actor == "anonymous@127.0.0.1"
    journal = AuditEvent.objects.get(event_type="session.created", resource_id=created["session_id"])
    assert journal.trace_id == answers["fast"][0].headers["x-trace-id"] and journal.ip_address == "127.0.0.1"
    assert journal.actor == session.actor and journal.metadata == {"pool": "default", "position": 2}


def test_what_would_not_succeed_is_answered_by_django(servers):
    url = servers["fast"]
    mine = httpx.post(f"{url}{API}/session").json()["session_id"]
    maintained(mine, url)
    bob = api_key_for("bob")
    bobs = httpx.post(f"{url}{API}/session", headers={"X-API-Key": bob}).json()["session_id"]
    unknown = str(uuid.uuid4())
    with Path(url) as path:
        answers = [
            httpx.post(f"{url}{API}/session/heartbeat", headers={"X-Session-ID": unknown}),
            httpx.post(f"{url}{API}/session/heartbeat", headers={"X-Session-ID": "not-a-uuid"}),
            httpx.post(f"{url}{API}/session/heartbeat"),
            httpx.get(f"{url}{API}/session/{unknown}"),
            httpx.get(f"{url}{API}/session/{bobs}"),  # anonymous callers do not see a user's session
            httpx.post(f"{url}{API}/session/heartbeat", headers={"X-Session-ID": bobs}),
            httpx.post(f"{url}{API}/session", headers={"X-API-Key": "lm_not-a-key"}),
            httpx.post(f"{url}{API}/session", headers={"Authorization": "Bearer a.b.c"}),  # a provider's token
            httpx.post(f"{url}{API}/session?pool=nowhere"),
            httpx.post(f"{url}{API}/session?pool=default&extra=1"),
        ]
    assert [r.status_code for r in answers] == [404, 404, 422, 404, 404, 404, 401, 401, 422, 201]
    for response in answers[:-1]:
        assert response.headers["content-type"].startswith("application/problem+json"), response.request.url
    assert answers[0].json()["detail"] == "Session not found" and answers[3].json()["detail"] == "Session not found"
    assert answers[6].headers["www-authenticate"] == 'Bearer realm="api"'
    assert path.served("heartbeat") == path.served("poll") == path.served("create") == 0
    assert (path.passed_on("heartbeat"), path.passed_on("poll"), path.passed_on("create")) == (4, 2, 4)
    # The owner's key and a privileged key see it; the fast path serves both.
    operator = api_key_for("olga", staff=True)
    with Path(url) as path:
        assert httpx.get(f"{url}{API}/session/{bobs}", headers={"X-API-Key": bob}).status_code == 200
        assert httpx.get(f"{url}{API}/session/{bobs}", headers={"Authorization": f"Bearer {operator}"}).status_code == 200
        assert httpx.post(f"{url}{API}/session/heartbeat",
                          headers={"X-API-Key": operator, "X-Session-ID": bobs}).status_code == 204
    assert path.served("poll") == 2 and path.served("heartbeat") == 1


def test_browser_sessions_https_rules_and_due_maintenance_go_to_django(servers, settings):
    url = servers["fast"]
    first = httpx.post(f"{url}{API}/session").json()["session_id"]
    with Path(url) as path:
        assert httpx.get(f"{url}{API}/session/{first}").status_code == 200  # the pool was never maintained
        cookie = httpx.post(f"{url}{API}/session/heartbeat", headers={
            "X-Session-ID": first, "Cookie": f"{settings.SESSION_COOKIE_NAME}=whatever"})
        bad_host = httpx.post(f"{url}{API}/session/heartbeat", headers={"X-Session-ID": first, "Host": "evil.example"})
    assert cookie.status_code == 204 and bad_host.status_code == 400
    assert path.passed_on("poll") == 1 and path.passed_on("heartbeat") == 2 and path.served("heartbeat") == 0


def test_full_queues_and_rate_limits_are_djangos(servers):
    url = servers["strict"]
    carol, operator = api_key_for("carol"), api_key_for("dora", staff=True)
    with Path(url) as path:
        created = [httpx.post(f"{url}{API}/session", headers={"X-API-Key": carol}) for _ in range(3)]
        beats = [httpx.post(f"{url}{API}/session/heartbeat",
                            headers={"X-API-Key": operator, "X-Session-ID": created[0].json()["session_id"]})
                 for _ in range(5)]
    assert [r.status_code for r in created] == [201, 201, 503]
    assert created[2].json()["queue_length"] == 2 and int(created[2].headers["retry-after"]) >= 1
    assert created[0].headers["x-ratelimit-limit"] == "4" and created[0].headers["x-ratelimit-remaining"] == "3"
    assert [r.status_code for r in beats] == [204, 204, 204, 204, 429]  # 4 a minute, the operator's own bucket
    assert int(beats[4].headers["retry-after"]) >= 1 and beats[4].headers["x-ratelimit-remaining"] == "0"
    assert beats[3].headers["x-ratelimit-remaining"] == "0"
    assert path.served("create") == 2 and path.passed_on("create") == 1
    assert path.served("heartbeat") == 4 and path.passed_on("heartbeat") == 1


def test_concurrent_creations_keep_fifo_order_and_their_own_trace_ids(servers):
    url = servers["fast"]
    clients = 40

    async def create_all():
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=clients)) as http:
            return await asyncio.gather(*(http.post(f"{API}/session") for _ in range(clients)))

    with Path(url) as path:
        answers = asyncio.run(create_all())
    assert path.served("create") == clients
    assert all(r.status_code == 201 for r in answers)
    positions = {r.json()["session_id"]: r.json()["position"] for r in answers}
    assert sorted(positions.values()) == list(range(1, clients + 1))
    sessions = list(Session.objects.order_by("ticket"))
    assert [s.position for s in sessions] == list(range(1, clients + 1))  # arrival order is queue order
    assert {str(s.pk): s.position for s in sessions} == positions
    assert len({s.ticket for s in sessions}) == clients
    journal = dict(AuditEvent.objects.filter(event_type="session.created").values_list("resource_id", "trace_id"))
    assert journal == {r.json()["session_id"]: r.headers["x-trace-id"] for r in answers}


# --- in-process: routing, credentials, HTTPS rules, replay (no database; the fallback records calls) ------

class Recorder:
    """A stand-in for Django behind the fast path: records what reaches it and answers 299."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        messages = [await receive()]
        while messages[-1].get("more_body"):
            messages.append(await receive())
        self.calls.append((scope["path"], b"".join(m.get("body", b"") for m in messages)))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call_app(app, method: str, path: str, *, headers=(), body_parts=(b"",), scheme="http", client=("127.0.0.1", 5000)):
    """Drive one HTTP request through an ASGI app; returns the response messages."""
    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "scheme": scheme,
             "headers": [(b"host", b"127.0.0.1"), *headers], "client": client}
    incoming = [{"type": "http.request", "body": part, "more_body": n < len(body_parts) - 1}
                for n, part in enumerate(body_parts)] + [{"type": "http.disconnect"}]
    sent = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.fixture
def fast_app(settings):
    from apps.sessions.api.fast import RemoteLabFastPath

    recorder = Recorder()
    app = RemoteLabFastPath(recorder, threads=1)
    yield app, recorder
    app.executor.shutdown()


@pytest.mark.django_db(transaction=False)
def test_routes_of_the_fast_path():
    from apps.sessions.api.fast import _endpoint

    assert _endpoint("POST", f"{API}/session") == "create"
    assert _endpoint("POST", f"{API}/session/heartbeat") == "heartbeat"
    assert _endpoint("GET", f"{API}/session/abc") == "poll"
    assert _endpoint("GET", f"{API}/healthz") == "healthz"
    for method, path in [("GET", f"{API}/session"), ("DELETE", f"{API}/session/abc"), ("GET", f"{API}/session/"),
                         ("GET", f"{API}/session/a/b"), ("GET", f"{API}/sessionx"), ("POST", f"{API}/lab"),
                         ("HEAD", f"{API}/healthz"), ("GET", f"{API}/session/heartbeat/x"), ("GET", "/api/workers")]:
        assert _endpoint(method, path) is None, (method, path)


@pytest.mark.django_db(transaction=False)
def test_credentials_the_fast_path_takes_and_those_it_leaves_to_django():
    from apps.sessions.api.fast import PASS_ON, _api_key, _pool_query

    assert _api_key({}) is None
    assert _api_key({b"x-api-key": b" lm_abc "}) == "lm_abc"
    assert _api_key({b"authorization": b"Bearer lm_abc"}) == "lm_abc"
    assert _api_key({b"authorization": b"Bearer aaa.bbb.ccc"}) is PASS_ON  # a provider's token
    assert _api_key({b"authorization": b"Basic dXNlcjpwdw=="}) is PASS_ON
    assert _pool_query(b"") is None and _pool_query(b"pool=") is None and _pool_query(b"pool=lab%20a") == "lab a"
    assert _pool_query(b"pool=a&pool=b") is PASS_ON and _pool_query(b"x=1") is PASS_ON
    assert _pool_query(b"pool=" + b"p" * 51) is PASS_ON  # Django's 422 (max 50 characters)
    assert _pool_query(b"pool=%20lab%20") == "lab" and _pool_query(b"pool=%20%20") is None  # trimmed, as DRF does
    assert _pool_query(b"pool=a%00b") is PASS_ON and _pool_query("pool=é".encode()) is PASS_ON


@pytest.mark.django_db(transaction=False)
def test_healthz_is_answered_without_django_and_with_its_headers(fast_app):
    app, recorder = fast_app
    sent = call_app(app, "GET", f"{API}/healthz")
    assert sent[0]["status"] == 204 and recorder.calls == []
    headers = dict(sent[0]["headers"])
    assert headers[b"allow"] == b"GET, HEAD, OPTIONS" and headers[b"content-length"] == b"0"
    assert headers[b"x-frame-options"] == b"DENY" and b"x-trace-id" in headers and b"content-type" not in headers


@pytest.mark.django_db(transaction=False)
def test_a_request_with_a_body_or_a_bad_host_reaches_django_whole(fast_app):
    app, recorder = fast_app
    assert call_app(app, "POST", f"{API}/session", body_parts=(b'{"a":', b" 1}"))[0]["status"] == 299
    big = b"x" * (70 * 1024)
    assert call_app(app, "POST", f"{API}/session/heartbeat", body_parts=(big, b"tail"))[0]["status"] == 299
    assert call_app(app, "GET", f"{API}/healthz", headers=[(b"host", b"evil.example")])[0]["status"] == 299
    assert call_app(app, "GET", "/api/workers")[0]["status"] == 299
    assert recorder.calls == [(f"{API}/session", b'{"a": 1}'), (f"{API}/session/heartbeat", big + b"tail"),
                              (f"{API}/healthz", b""), ("/api/workers", b"")]


@pytest.mark.django_db(transaction=False)
def test_https_rules_are_djangos(settings):
    from apps.sessions.api.fast import RemoteLabFastPath

    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    recorder = Recorder()
    app = RemoteLabFastPath(recorder, threads=1)
    try:
        assert call_app(app, "GET", f"{API}/healthz")[0]["status"] == 299  # plain HTTP: Django redirects
        proxied = call_app(app, "GET", f"{API}/healthz", headers=[(b"x-forwarded-proto", b"https")])[0]
        direct = call_app(app, "GET", f"{API}/healthz", scheme="https")[0]
    finally:
        app.executor.shutdown()
    for answer in (proxied, direct):
        assert answer["status"] == 204
        assert dict(answer["headers"])[b"strict-transport-security"] == b"max-age=3600; includeSubDomains"
    assert len(recorder.calls) == 1


@pytest.mark.django_db(transaction=False)
def test_a_client_gone_before_its_request_is_read_gets_nothing(fast_app):
    from apps.sessions.api.fast import RemoteLabFastPath

    app, recorder = fast_app
    sent = []

    async def run():
        async def receive():
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await RemoteLabFastPath.__call__(app, {"type": "http", "method": "POST", "path": f"{API}/session",
                                               "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1)},
                                         receive, send)

    asyncio.run(run())
    assert sent == [] and recorder.calls == []
