"""The remote-lab fast path: the clients' hot requests served by a plain ASGI app in front of Django.

`POST /session`, `GET /session/{id}`, `POST /session/heartbeat` and `GET /healthz` of /api/remote-lab are
what automation clients send over and over (docs/remote-lab.md). Through Django, DRF and the thread
pool's WSGI hop each cost 2–4 ms of server CPU before and after its one or two SQL statements
(docs/performance.md, "Where the time goes"); here the same work costs a fraction of that:

1. On the event loop: the path, the (empty) body, the Host (ALLOWED_HOSTS), the HTTPS rules
   (SECURE_SSL_REDIRECT) and the kind of credentials: none (an anonymous client, which must come from
   SESSION_ANONYMOUS_NETWORKS) or an API key (X-API-Key, or Authorization: Bearer lm_...).
2. In one of SESSION_FAST_PATH_THREADS threads, each keeping its database connection as Django's request
   threads do: the API key's user, the rate limit (SESSION_API_RATE_LIMIT, the same buckets as
   apps/sessions/api/access.py), then the same services and selectors as the DRF views
   (apps/sessions/api/views.py). Requests are gathered: while one batch of a kind is in its thread, the
   next ones wait and go together in the next batch. Heartbeats: one UPDATE (`sessions_heartbeat_many`).
   Polls: one read (`sessions_get_live_many`) and at most one touch. Creations, per pool: one transaction
   (`session_create_many`: one lock of the pool, one INSERT, one commit and one audit seal for all of
   them, each request keeping its own trace id in the journal). A client gets its answer only after its
   batch committed.
3. The answer: the same status, body and headers as the DRF view's (X-Trace-Id, X-RateLimit-*, the
   security headers; tests/sessions/test_fast_path.py compares them), the request log line, and in
   /metrics `labmanager_remote_lab_fast_path_total{endpoint, outcome}` (served / passed_on) and
   `labmanager_remote_lab_fast_path_batches_total{endpoint}` (requests per batch: served / batches).

Every other request, and every request that would not succeed here, is passed to Django unchanged and
answered there exactly as before (problem+json, WWW-Authenticate, journalled refusals): unknown or
foreign sessions, bad, revoked or expired keys, provider tokens (JWTs), browser session cookies, other
query parameters, an unknown pool, a full queue, a rate limit reached, a read that finds the pool's
maintenance pass due, a database error. A request is only passed on before it changed anything (or after
an UPDATE that matched no row), so Django's answer is the one it would have given. One difference: a
request passed on after its rate-limit token was taken (an unknown session's heartbeat, a full queue)
takes a second token in Django.

`SESSION_FAST_PATH=false` sends everything through Django again.
"""

import asyncio
import contextvars
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http.request import split_domain_port, validate_host
from prometheus_client import Counter
from rest_framework import exceptions, serializers

from apps.sessions import selectors, services
from apps.sessions.api.access import anonymous_allowed, anonymous_principal, client_ip, rate_limit_take
from apps.sessions.selectors import Principal, parse_session_id
from labmanager.api.actors import api_key_actor
from labmanager.api.authentication import user_for_api_key
from labmanager.api.buckets import Decision
from labmanager.api.permissions import privileged
from labmanager.api.throttling import client_address
from labmanager.errors import DomainError, NotFound
from labmanager.identity.tokens import looks_like_jwt
from labmanager.middleware import TRACE_HEADER, client_ip_var, request_log, trace_id_var

log = logging.getLogger(__name__)

API = "/api/remote-lab"
SESSION_PATH = API + "/session"
HEARTBEAT_PATH = API + "/session/heartbeat"
HEALTHZ_PATH = API + "/healthz"
MAX_BODY = 64 * 1024  # these requests have no body; a larger one goes to Django as it is
MAX_BATCH = 500  # POST /session requests in one transaction at most

REQUESTS = Counter("labmanager_remote_lab_fast_path", "Remote-lab requests the fast path served or passed to Django",
                   ["endpoint", "outcome"])
BATCHES = Counter("labmanager_remote_lab_fast_path_batches", "Batches (one thread job, one statement or "
                  "transaction each) of the fast path's requests", ["endpoint"])
# The Allow header DRF sends for each view (tests/sessions/test_fast_path.py checks them against Django's).
ALLOW = {"create": "POST, OPTIONS", "heartbeat": "POST, OPTIONS", "poll": "GET, DELETE, HEAD, OPTIONS",
         "healthz": "GET, HEAD, OPTIONS"}
_DATETIME = serializers.DateTimeField()  # DRF's rendering of datetimes (ISO 8601, "Z" for UTC)


PASS_ON = object()  # a result: pass the request on


@dataclass
class Call:
    """What a thread needs of one request (nothing of the ASGI scope itself)."""

    remote_addr: str | None
    forwarded_for: str | None
    api_key: str | None
    trace_id: str
    target: str = ""  # the session id of a heartbeat or a poll
    decision: Decision | None = field(default=None)
    principal: Principal | None = field(default=None)

    @property
    def client_ip(self) -> str | None:
        return client_ip(self.remote_addr)


# --------------------------------------------------------------------------- the work, in a thread

def _admit(call: Call, keys: dict) -> bool:
    """Who is calling and whether the rate limit lets them: what DRF's authentication, RemoteLabAccess and
    RemoteLabRateThrottle decide. False: Django must answer (401, 429). `keys`: the API keys already
    looked up in this batch."""
    if call.api_key:
        if call.api_key not in keys:
            try:
                keys[call.api_key] = user_for_api_key(call.api_key)
            except exceptions.AuthenticationFailed:
                keys[call.api_key] = None
        if keys[call.api_key] is None:
            return False
        user, api_key = keys[call.api_key]
        call.principal = Principal(user_id=user.pk, actor=api_key_actor(user, api_key), privileged=privileged(user))
        ident = f"user:{user.pk}"
    else:
        if not anonymous_allowed(call.remote_addr):
            return False
        call.principal = anonymous_principal(call.remote_addr)
        meta = {"REMOTE_ADDR": call.remote_addr}
        if call.forwarded_for is not None:
            meta["HTTP_X_FORWARDED_FOR"] = call.forwarded_for
        ident = f"ip:{client_address(SimpleNamespace(META=meta))}"
    call.decision = rate_limit_take(ident)
    return call.decision is None or call.decision.allowed


def _in_request(work, *args):
    """Run `work` as Django runs a request: stale or broken connections closed before and after."""
    close_old_connections()
    try:
        return work(*args)
    finally:
        close_old_connections()


def _heartbeats(_key, calls: list[Call], committed=None) -> list:
    """POST /session/heartbeat of several clients: one UPDATE (per principal). A session not found
    (the UPDATE matched no row) is Django's 404."""
    keys = {}
    admitted = [call for call in calls if _admit(call, keys)]
    found = services.sessions_heartbeat_many([(call.target, call.principal) for call in admitted])
    alive = {id(call) for call, ok in zip(admitted, found) if ok}
    return [None if id(call) in alive else PASS_ON for call in calls]


def _polls(_key, calls: list[Call], committed=None) -> list:
    """GET /session/{id} of several clients, as SessionDetailView.get: one read of their sessions (not
    found or not theirs: Django's 404), the rate limit, one touch, the bodies. A pool whose maintenance
    pass is due goes to Django, which runs the pass."""
    sessions = selectors.sessions_get_live_many([call.target for call in calls])
    keys, answered = {}, []
    now = time.time()
    for call in calls:
        session = sessions.get(_session_key(call.target))
        if session is None or session.pool.maintained_at is None or (
                now - session.pool.maintained_at.timestamp() >= settings.SESSION_SWEEP_INTERVAL_SECONDS):
            continue
        if _admit(call, keys) and call.principal.can_see(session):
            answered.append((call, session))
    services.sessions_touch_many([session for _, session in answered])
    workers = selectors.worker_public_ids([session.worker_id for _, session in answered if session.worker_id])
    bodies = {id(call): {
        "status": session.status,
        "position": session.position,
        "estimated_wait_seconds": selectors.session_estimated_wait(session),
        "pool": session.pool.name,
        "worker": workers.get(session.worker_id),
        "created_at": _DATETIME.to_representation(session.created_at),
        "last_seen_at": _DATETIME.to_representation(session.last_seen_at),
    } for call, session in answered}
    return [bodies.get(id(call), PASS_ON) for call in calls]


def _creations(pool_name: str | None, calls: list[Call], committed=None) -> list:
    """POST /session of several clients in one pool: the admitted ones in one session_create_many.
    Returns per call its Session or PASS_ON. `committed()` is called once their transaction committed
    (the next batch may start while this one's journal rows are sealed)."""
    keys = {}
    admitted = [call for call in calls if _admit(call, keys)]
    results: dict[int, object] = {}
    if admitted:
        try:
            sessions = services.session_create_many(pool_name=pool_name, on_commit=committed, requests=[
                services.NewSession(call.principal, call.client_ip, call.trace_id) for call in admitted])
        except (DomainError, DatabaseError) as exc:  # an unknown pool (422); the database: Django answers each
            log.info("POST /session: %d requests passed on to Django: %s", len(admitted), exc)
            sessions = [None] * len(admitted)
        results = {id(call): session for call, session in zip(admitted, sessions)}
    return [results.get(id(call)) or PASS_ON for call in calls]


def _session_key(value: str):
    try:
        return parse_session_id(value)
    except NotFound:
        return None


_ENDPOINT_OF = {_heartbeats: "heartbeat", _polls: "poll", _creations: "create"}


# --------------------------------------------------------------------------- the ASGI app

class _Gatherer:
    """Requests of one kind (and pool) gathered into batches, one batch at a time per key: what arrives
    while a batch runs goes into the next one (group commit). `work(key, calls, committed)` runs in a
    thread and returns one result per call. A batch of creations calls `committed()` right after its
    commit, and the next batch starts then, while this one's journal rows are sealed (the queue's order
    is fixed by then)."""

    def __init__(self, run):
        self.run = run
        self.pending: dict[object, list[tuple[Call, asyncio.Future]]] = {}
        self.draining: dict[object, asyncio.Task] = {}
        self.running: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    async def submit(self, work, key, call: Call):
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault((work, key), []).append((call, future))
        if (work, key) not in self.draining:
            self.draining[(work, key)] = asyncio.ensure_future(self._drain(work, key))
        return await future

    async def _drain(self, work, key):
        slot = (work, key)
        trace_id_var.set("-")  # a batch is no one request's (its creations journal their own trace ids)
        loop = asyncio.get_running_loop()
        try:
            while self.pending.get(slot):
                queue = self.pending[slot]
                batch, self.pending[slot] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                BATCHES.labels(_ENDPOINT_OF[work]).inc()
                released = asyncio.Event()
                task = asyncio.ensure_future(self._batch(work, key, batch, released,
                                                         committed=lambda: loop.call_soon_threadsafe(released.set)))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                await released.wait()
        finally:
            del self.draining[slot]
            for _, future in self.pending.pop(slot, []):  # only if cancelled (the server stops)
                if not future.done():
                    future.set_result(PASS_ON)

    async def _batch(self, work, key, batch, released: asyncio.Event, *, committed):
        try:
            results = await self.run(work, key, [call for call, _ in batch], committed)
        except DatabaseError as exc:  # Django answers them (a 500 if the database is really gone)
            log.warning("%s: %d requests passed on to Django: %s", work.__name__, len(batch), exc)
            results = [PASS_ON] * len(batch)
        except Exception:  # a defect: logged as one; the clients still get Django's answer
            log.exception("%s failed; %d requests passed on to Django", work.__name__, len(batch))
            results = [PASS_ON] * len(batch)
        finally:
            released.set()
        for (_, future), result in zip(batch, results):
            if not future.done():  # its client may have gone
                future.set_result(result)


class RemoteLabFastPath:
    """ASGI app for HTTP: the hot remote-lab requests here, everything else to `fallback` (Django)."""

    def __init__(self, fallback, *, threads: int):
        self.fallback = fallback
        self.executor = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="remote-lab-fast")
        self.gatherer = _Gatherer(self._run)
        self.session_cookie = settings.SESSION_COOKIE_NAME.encode("latin-1")
        self.allowed_hosts = settings.ALLOWED_HOSTS or (
            [".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        self.static_headers = _security_headers()

    async def _run(self, work, *args):
        context = contextvars.copy_context()  # the calling task's (a batch's trace id is "-")
        return await asyncio.get_running_loop().run_in_executor(self.executor, context.run, _in_request, work, *args)

    async def __call__(self, scope, receive, send):
        endpoint = _endpoint(scope["method"], scope["path"])
        if endpoint is None:
            return await self.fallback(scope, receive, send)
        body, complete = b"", False
        while not complete:  # no body is expected; whatever comes is kept for Django
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nothing to answer, nothing done
            body += message.get("body", b"")
            complete = not message.get("more_body", False)
            if len(body) > MAX_BODY:
                break
        started = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # repeated ones joined with commas, as Django's META has them
            headers[name] = headers[name] + b"," + value if name in headers else value
        answer = None
        if complete and not body and self._acceptable(scope, headers):
            answer = await self._serve(endpoint, scope, headers)
        if answer is None:
            REQUESTS.labels(endpoint, "passed_on").inc()
            return await self.fallback(scope, _replay(body, complete, receive), send)
        REQUESTS.labels(endpoint, "served").inc()
        status, payload, response_headers = answer
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})
        if request_log.isEnabledFor(logging.INFO):
            query = scope.get("query_string", b"").decode("latin-1")
            request_log.info("%s %s %s %.1fms", scope["method"], scope["path"] + (f"?{query}" if query else ""),
                             status, (time.perf_counter() - started) * 1000)

    def _acceptable(self, scope, headers) -> bool:
        """The request is as Django would serve it plainly: an allowed Host, HTTPS where required, no
        browser session (SessionAuthentication and CSRF are Django's)."""
        host = headers.get(b"host")
        if host is None:
            return False
        domain, _port = split_domain_port(host.decode("latin-1"))
        if not domain or not validate_host(domain, self.allowed_hosts):
            return False
        if settings.SECURE_SSL_REDIRECT and not self._secure(scope, headers):
            return False
        cookie = headers.get(b"cookie")
        return cookie is None or self.session_cookie not in cookie

    def _secure(self, scope, headers) -> bool:
        if scope.get("scheme") == "https":
            return True
        proxy = settings.SECURE_PROXY_SSL_HEADER
        if not proxy:
            return False
        name, value = proxy
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
        return headers.get(header, b"").decode("latin-1").split(",")[0].strip() == value

    async def _serve(self, endpoint: str, scope, headers):
        """(status, body, headers), or None to pass the request on."""
        trace_id = uuid.uuid4().hex
        trace_id_var.set(trace_id)  # this request's own context (daphne runs each in its own task)
        client = scope.get("client")
        remote_addr = client[0] if client else None
        client_ip_var.set(remote_addr)
        extra = [(b"allow", ALLOW[endpoint].encode())]
        if endpoint == "healthz":
            return self._answer(204, b"", trace_id, scope, headers, extra)
        api_key = _api_key(headers)
        if api_key is PASS_ON:
            return None
        if api_key is None and not anonymous_allowed(remote_addr):
            return None  # Django's 401, with its refusal counted
        forwarded = headers.get(b"x-forwarded-for")
        call = Call(remote_addr=remote_addr, forwarded_for=forwarded.decode("latin-1") if forwarded else None,
                    api_key=api_key, trace_id=trace_id)
        if api_key is None:
            extra.append((b"vary", b"Cookie"))  # DRF's session authentication looked (for no cookie)
        if endpoint == "heartbeat":
            session_id = headers.get(b"x-session-id")
            if not session_id:
                return None  # Django's 422
            call.target = session_id.decode("latin-1")
            if await self.gatherer.submit(_heartbeats, None, call) is PASS_ON:
                return None
            return self._answer(204, b"", trace_id, scope, headers, extra, call.decision)
        if endpoint == "poll":
            call.target = scope["path"][len(SESSION_PATH) + 1:]
            found = await self.gatherer.submit(_polls, None, call)
            if found is PASS_ON:
                return None
            return self._answer(200, _json(found), trace_id, scope, headers, extra, call.decision)
        pool = _pool_query(scope.get("query_string", b""))
        if pool is PASS_ON:
            return None
        # One batch at a time per pool: the key is the pool's name, the default's spelled out.
        session = await self.gatherer.submit(_creations, pool or settings.SESSION_DEFAULT_POOL, call)
        if session is PASS_ON:
            return None
        return self._answer(201, _json({"session_id": str(session.pk), "position": session.position}), trace_id,
                            scope, headers, extra, call.decision)

    def _answer(self, status, payload: bytes, trace_id, scope, headers, extra, decision: Decision | None = None):
        response = list(self.static_headers)
        if payload:
            response.append((b"content-type", b"application/json"))
        response.append((b"content-length", str(len(payload)).encode()))
        response += extra
        if decision is not None:
            response += [(name.lower().encode(), value.encode()) for name, value in decision.as_headers().items()]
        if settings.SECURE_HSTS_SECONDS and self._secure(scope, headers):
            response.append((b"strict-transport-security", _hsts().encode()))
        response.append((TRACE_HEADER.lower().encode(), trace_id.encode()))
        return status, payload, response


def _endpoint(method: str, path: str) -> str | None:
    if not path.startswith(SESSION_PATH):
        return "healthz" if path == HEALTHZ_PATH and method == "GET" else None
    if path == SESSION_PATH:
        return "create" if method == "POST" else None
    if path == HEARTBEAT_PATH:
        return "heartbeat" if method == "POST" else None
    rest = path[len(SESSION_PATH) + 1:]
    if method == "GET" and path[len(SESSION_PATH)] == "/" and rest and "/" not in rest:
        return "poll"
    return None


def _api_key(headers) -> str | None | object:
    """The API key of the request, None without credentials, PASS_ON for anything else (a provider's
    token, another scheme): what labmanager.api.authentication and labmanager.identity.bearer read."""
    raw = headers.get(b"x-api-key")
    if raw is not None and raw.strip():
        return raw.decode("latin-1").strip()
    authorization = headers.get(b"authorization")
    if authorization is None:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or looks_like_jwt(credentials):
        return PASS_ON
    return credentials


def _pool_query(query_string: bytes):
    """The `pool` of POST /session?pool= (whitespace trimmed, as DRF's CharField does): None for the
    default; PASS_ON for any other query, and for what Django would refuse (422) or decode otherwise."""
    if not query_string:
        return None
    if not query_string.isascii():
        return PASS_ON
    pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "pool":
        return PASS_ON
    pool = pairs[0][1].strip()
    if len(pool) > 50 or "\x00" in pool:
        return PASS_ON
    return pool or None


def _json(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _security_headers() -> list[tuple[bytes, bytes]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to every response (HSTS: per request)."""
    out = []
    if settings.X_FRAME_OPTIONS:
        out.append((b"x-frame-options", settings.X_FRAME_OPTIONS.upper().encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        out.append((b"x-content-type-options", b"nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        value = policy if isinstance(policy, str) else ",".join(policy)
        out.append((b"referrer-policy", ",".join(v.strip() for v in value.split(",")).encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        out.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    return out


def _hsts() -> str:
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


def _replay(body: bytes, complete: bool, receive):
    """A `receive` for Django that first gives back what the fast path has read."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
