"""Benchmark the remote-lab session API: requests per second of POST /session, GET /session/{id} and
POST /session/heartbeat on ONE daphne process at 32 concurrent clients, beside an in-memory reference
server of the same three endpoints; then reaping 100,000 stale sessions.

Run from the repository root (`make bench`):

    .venv/bin/python bench/sessions.py [--seconds 5] [--rounds 3] [--concurrency 32] [--stale 100000]

What it does:
1. Uses PostgreSQL when 127.0.0.1:5432 answers (database lm_bench_sessions, created, migrated and dropped
   here), else a fresh SQLite file under var/bench/ (the embedded default).
2. Counts the SQL queries of one request of each endpoint in-process (Django's test client, same database).
3. Starts daphne processes on 127.0.0.1: labmanager.asgi (the real, durable API, DEBUG off, no access log;
   the three endpoints on the remote-lab fast path, apps/sessions/api/fast.py), the same with
   SESSION_FAST_PATH=false ("django": through Django and DRF on the thread pool, labmanager/asgi.py), the
   same with HTTP_THREADS=0 too ("asgi": every request through Django's ASGI handler; skip with --no-asgi),
   and
   `bench.sessions:reference_app` below (a dict behind a lock, the same paths, bodies and status codes).
   All are called anonymously from loopback, as the seed's clients call it. The pool has no workers, so
   every session waits (GET reads a waiting session's position).
4. Measures each endpoint, and GET /healthz (no database: the framework's floor), on each server in
   interleaved rounds (the order reversed every round): `--concurrency` keep-alive connections, each with
   one request in flight, bounded by `--seconds` and `--max-requests` per round. The client is a small
   asyncio HTTP/1.1 client (not httpx: on 2 shared cores httpx's own CPU would cap the reference
   server's figure). Every response is checked.
5. Reaping: bulk-creates `--stale` stale sessions in their own pool (most waiting, `--stale-active` of
   them active, each holding a claim on its worker's running lab) plus 1,000 fresh waiting sessions behind
   them, VACUUM ANALYZEs (as autovacuum would), then times `services.sessions_reap()` (the schedule's call) in
   parts: the reaping transaction (the statement that deletes the reaped sessions and journals one audit
   row each; the others), its commit, the audit seal after the commit and the publication within the seal.
   `--redis URL` publishes through channels_redis with one listening channel (and times, for
   comparison, one group send per event for 10,000 events); `--explain` prints the plans of the
   reaping's statements and its slowest statements. Checks the result.
Always stops the daphne processes (also on Ctrl-C or SIGTERM) and drops the PostgreSQL database.
Goals (issue 5): about 500 req/s for each endpoint, on par with the in-memory server; reaping < 2 s.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, also when daphne imports this module
from common import cpu_seconds, free_port, pg_admin, pg_available  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_DB = "lm_bench_sessions"
SQLITE_PATH = ROOT / "var" / "bench" / "sessions.sqlite3"
API = "/api/remote-lab"
ENDPOINTS = ("POST /session", "GET /session/{id}", "POST /session/heartbeat")
FLOOR = "GET /healthz"  # no database, no authentication: the framework's own cost per request
GOAL_RPS = 500
GOAL_REAP_SECONDS = 2.0


# --------------------------------------------------------------------------- the in-memory reference

class _MemoryQueue:
    """The reference server's state: sessions in a dict behind a lock (no durability, no framework)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sessions: dict[str, dict] = {}
        self.waiting = 0

    def create(self) -> dict:
        session_id = str(uuid.uuid4())
        with self.lock:
            self.waiting += 1
            self.sessions[session_id] = {"status": "waiting", "position": self.waiting, "last_seen": time.time()}
        return {"session_id": session_id, "position": self.waiting}

    def get(self, session_id: str) -> dict | None:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is None:
                return None
            session["last_seen"] = time.time()
            return {"status": session["status"], "position": session["position"], "estimated_wait_seconds": None}

    def heartbeat(self, session_id: str) -> bool:
        with self.lock:
            session = self.sessions.get(session_id)
            if session is not None:
                session["last_seen"] = time.time()
            return session is not None


_QUEUE = _MemoryQueue()
_NOT_FOUND = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Session not found"}


async def reference_app(scope, receive, send):
    """ASGI app: POST /session (201), GET /session/{id} (200/404), POST /session/heartbeat (204/404)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):  # drain the request body
        pass
    method, path = scope["method"], scope["path"]
    status, body = 404, _NOT_FOUND
    if path == API + "/healthz" and method == "GET":
        status, body = 204, None
    elif path == API + "/session" and method == "POST":
        status, body = 201, _QUEUE.create()
    elif path == API + "/session/heartbeat" and method == "POST":
        headers = dict(scope["headers"])
        found = _QUEUE.heartbeat(headers.get(b"x-session-id", b"").decode("latin-1"))
        status, body = (204, None) if found else (404, _NOT_FOUND)
    elif path.startswith(API + "/session/") and method == "GET":
        found = _QUEUE.get(path.rsplit("/", 1)[1])
        if found is not None:
            status, body = 200, found
    payload = b"" if body is None else json.dumps(body).encode()
    content_type = b"application/problem+json" if status == 404 else b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


# --------------------------------------------------------------------------- a lean HTTP/1.1 client

class Failure(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time (Content-Length or chunked bodies)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Length: 0\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.writer.write((head + "\r\n").encode("latin-1"))
        status_line = await self.reader.readline()
        if not status_line:
            raise Failure(f"{method} {path}: connection closed")
        status = int(status_line.split()[1])
        fields = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readline()  # the blank line after the last chunk (no trailers)
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readline()
        elif status in (204, 304):
            body = b""
        else:
            body = await self.reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(connections: list[Connection], endpoint: str, ids: list[str], *, seconds: float,
               max_requests: int) -> dict:
    """Every connection keeps one request of `endpoint` in flight, for at most `seconds` and at most
    `max_requests` requests in all; POST /session appends the new ids to `ids`."""
    issued = done = 0
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection, offset: int):
        nonlocal issued, done
        n = offset
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            n += len(connections)
            if endpoint == "POST /session":
                status, body = await conn.request("POST", API + "/session")
                if status != 201:
                    raise Failure(f"POST /session answered {status}: {body[:300]!r}")
                ids.append(json.loads(body)["session_id"])
            elif endpoint == "GET /session/{id}":
                status, body = await conn.request("GET", f"{API}/session/{ids[n % len(ids)]}")
                if status != 200 or b'"position"' not in body:
                    raise Failure(f"GET /session/{{id}} answered {status}: {body[:300]!r}")
            elif endpoint == FLOOR:
                status, body = await conn.request("GET", API + "/healthz")
                if status != 204:
                    raise Failure(f"GET /healthz answered {status}: {body[:300]!r}")
            else:
                status, body = await conn.request("POST", API + "/session/heartbeat",
                                                  {"X-Session-ID": ids[n % len(ids)]})
                if status != 204:
                    raise Failure(f"POST /session/heartbeat answered {status}: {body[:300]!r}")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(conn, i) for i, conn in enumerate(connections)))
    return {"requests": done, "elapsed": time.perf_counter() - started}


async def measure(servers: dict[str, tuple[int, int]], args, endpoints=(*ENDPOINTS, FLOOR)) -> dict:
    """servers: name -> (port, pid). Interleaved rounds of each endpoint on each server (the order of the
    servers reversed every round). Returns {(server, endpoint): [round results]}."""
    results: dict[tuple[str, str], list[dict]] = {}
    ids = {name: [] for name in servers}
    connections = {name: [Connection(port) for _ in range(args.concurrency)] for name, (port, _) in servers.items()}
    try:
        for name in servers:  # warm-up (unmeasured); also makes the first sessions GET and heartbeat use
            for endpoint in ENDPOINTS:
                await load(connections[name], endpoint, ids[name], seconds=args.warmup, max_requests=args.max_requests)
        names = list(servers)
        for round_no in range(args.rounds):
            order = names if round_no % 2 == 0 else names[::-1]
            for endpoint in endpoints:
                for name in order:
                    pid = servers[name][1]
                    cpu0, client0 = cpu_seconds(pid), time.process_time()
                    result = await load(connections[name], endpoint, ids[name], seconds=args.seconds,
                                        max_requests=args.max_requests)
                    result["server_cpu"] = (cpu_seconds(pid) - cpu0) / result["elapsed"]
                    result["client_cpu"] = (time.process_time() - client0) / result["elapsed"]
                    results.setdefault((name, endpoint), []).append(result)
                    print(f"  round {round_no + 1}  {name:<9} {endpoint:<24} "
                          f"{result['requests'] / result['elapsed']:8.1f} req/s  (CPU: server "
                          f"{result['server_cpu'] * 100:.0f} %, client {result['client_cpu'] * 100:.0f} % of a core; "
                          f"{len(ids[name]):,} sessions)", flush=True)
    finally:
        for conns in connections.values():
            for conn in conns:
                conn.close()
    return results


# --------------------------------------------------------------------------- servers and database

def start_daphne(app: str, env: dict) -> tuple[subprocess.Popen, int]:
    for _attempt in range(3):  # the free port may be taken between the probe and daphne's bind
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "daphne", "-v", "0", "-b", HOST, "-p", str(port), app],
                                cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection((HOST, port), timeout=1) as sock:
                    sock.sendall(f"GET {API}/healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                    if sock.recv(64).startswith(b"HTTP/1.1"):
                        return proc, port
            except OSError:
                time.sleep(0.2)
        stop(proc)
    raise RuntimeError(f"daphne {app} did not start")


def stop(proc: subprocess.Popen | None):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def bench_env(use_pg: bool, storage: Path) -> dict:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings", PYTHONPATH=str(ROOT), DEBUG="false",
               LOG_LEVEL="WARNING", ALLOWED_HOSTS=f"{HOST},testserver", SESSION_QUEUE_MAX="0",
               SESSION_STORAGE_DIR=str(storage), SESSION_DEFAULT_POOL="default",
               SESSION_ANONYMOUS_NETWORKS="127.0.0.1/32,::1/128",
               # The per-principal limit stays on (a cache counter per request), never reached.
               SESSION_API_RATE_LIMIT="100000000/min")
    env.pop("REDIS_URL", None)  # the embedded default: in-memory cache and channel layer
    env.pop("ROOT_URLCONF", None)
    if use_pg:
        env["DATABASE_URL"] = f"postgres://postgres@{HOST}:5432/{PG_DB}"
    else:
        env.pop("DATABASE_URL", None)
        env["SQLITE_PATH"] = str(SQLITE_PATH)
    return env


# --------------------------------------------------------------------------- in-process parts

def query_counts() -> dict[str, tuple[int, list[str]]]:
    """SQL queries of one request of each endpoint (test client, anonymous from 127.0.0.1)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    counts = {}
    assert client.post(API + "/session").status_code == 201  # the pool's first session also creates the pool
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(API + "/session")
    assert response.status_code == 201, response.content
    counts["POST /session"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    session_id = response.json()["session_id"]
    client.get(f"{API}/session/{session_id}")  # the first read may run the pool's maintenance pass
    time.sleep(1.1)  # past the touch resolution: a poll then writes last_seen_at, as most polls do
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"{API}/session/{session_id}")
    assert response.status_code == 200, response.content
    counts["GET /session/{id}"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(API + "/session/heartbeat", HTTP_X_SESSION_ID=session_id)
    assert response.status_code == 204, response.content
    counts["POST /session/heartbeat"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    return counts


def seed_stale(stale: int, stale_active: int, fresh: int) -> tuple[str, datetime]:
    """A pool with `stale` stale sessions (the first `stale_active` active on their own worker, holding a
    claim on its running lab) and `fresh` live waiting sessions behind them. Bulk inserts; status written
    directly, which is fine for a benchmark but not how the application moves sessions."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from apps.sessions.lifecycle import LabStatus, SessionStatus
    from apps.sessions.models import LabClaim, Session, SessionLab, SessionPool
    from apps.workers.models import Worker, WorkerStatus

    pool_name = "bench-reap"
    pool = SessionPool.objects.create(name=pool_name, next_ticket=stale + fresh + 1)
    workers = Worker.objects.bulk_create([
        Worker(name=f"bench-reap-{n}", status=WorkerStatus.RUNNING, cml_service_status="available",
               license_status="registered", session_pool=pool_name, aws_instance_id=f"i-benchreap{n:07d}")
        for n in range(stale_active)])
    labs = SessionLab.objects.bulk_create([
        SessionLab(worker=w, status=LabStatus.RUNNING, topology_sha256="0" * 64, cml_lab_id=f"lab-{n}",
                   ref_count=1) for n, w in enumerate(workers)])
    now = timezone.now()
    old = now - timedelta(seconds=max(settings.SESSION_WAITING_STALE_SECONDS,
                                      settings.SESSION_ACTIVE_STALE_SECONDS) + 60)
    rows = []
    for n in range(stale + fresh):
        active = n < stale_active
        rows.append(Session(
            pool=pool, ticket=n + 1, status=SessionStatus.ACTIVE if active else SessionStatus.WAITING,
            position=0 if active else n - stale_active + 1, worker=workers[n] if active else None,
            actor="bench", created_at=old, last_seen_at=old if n < stale else now,
            activated_at=old if active else None))
    created = Session.objects.bulk_create(rows, batch_size=5000)
    LabClaim.objects.bulk_create([LabClaim(session=created[n], lab=labs[n]) for n in range(stale_active)])
    return pool_name, old


def explain_reaping(pool_name: str) -> list[str]:
    """PostgreSQL plans (EXPLAIN, not run) of the reaping's statements on the sessions table, as
    sessions_reap() builds them: the read of the stale active ones, and the DELETE whose returned rows
    the journal's INSERT ... SELECT reads (one statement)."""
    from django.db import connection
    from django.utils import timezone

    from apps.sessions.lifecycle import SessionStatus
    from apps.sessions.models import SessionPool
    from apps.sessions.services.queue import delete_statement, stale_sessions

    pools = list(SessionPool.objects.filter(name=pool_name).values_list("pk", flat=True))
    candidates = stale_sessions(now=timezone.now(), pool_ids=pools)
    statements = {
        "stale active ones (read and locked first)": candidates.filter(status=SessionStatus.ACTIVE).query.sql_with_params(),
        "reap DELETE (its RETURNING rows feed the journal's INSERT)": delete_statement(candidates),
    }
    lines = []
    with connection.cursor() as cursor:
        for name, (sql, params) in statements.items():
            cursor.execute("EXPLAIN " + sql, params)
            lines.append(f"  {name}:")
            lines += [f"    {row[0]}" for row in cursor.fetchall()]
    return lines


def time_reaping(stale: int, stale_active: int, fresh: int, *, redis: bool, explain: bool) -> dict:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from apps.audit import publish
    from apps.audit import services as audit_services
    from apps.audit.models import AuditEvent
    from apps.sessions import services
    from apps.sessions.lifecycle import SessionStatus
    from apps.sessions.models import LabClaim, Session
    from apps.sessions.services import queue as queue_services

    t0 = time.perf_counter()
    pool_name, last_seen = seed_stale(stale, stale_active, fresh)
    if connection.vendor == "postgresql":
        # What autovacuum does a minute after such a bulk insert; VACUUM too, so that the dead rows the
        # HTTP rounds left (every heartbeat and poll updates a row) are not cleaned up during the timing.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE lab_sessions_session")
            cursor.execute("VACUUM ANALYZE audit_auditevent")
    seeded = time.perf_counter() - t0
    plans = explain_reaping(pool_name) if explain and connection.vendor == "postgresql" else []
    layer = get_channel_layer()
    listener = None
    if redis:  # a live tail's doorbell channel, as a daphne process with live clients has one
        listener = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(publish.LIVE_GROUP, listener)
    # Time the parts: the journal's INSERT ... SELECT (inside the reaping transaction), the seal after
    # the commit and, within the seal, the publication (channel layer doorbell, webhooks).
    spent = {"journal_insert": 0.0, "seal": 0.0, "publish": 0.0}
    published = []
    originals = (queue_services.audit_record_select, audit_services.audit_seal, publish.deliver)

    def timed(name, function, keep=None):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
                if keep is not None:
                    keep.extend(args[0])
        return wrapper

    queue_services.audit_record_select = timed("journal_insert", originals[0])
    audit_services.audit_seal = timed("seal", originals[1])
    publish.deliver = timed("publish", originals[2], keep=published)
    audit_before = AuditEvent.objects.count()
    # An outer transaction: the reaping's statements and its commit + audit seal are timed apart
    # (sessions_reap() called on its own, as the schedule does, runs both in one call).
    capture = CaptureQueriesContext(connection) if explain else contextlib.nullcontext()
    t0 = time.perf_counter()
    try:
        with capture:
            with transaction.atomic():
                counts = services.sessions_reap()
                t1 = time.perf_counter()
            t2 = time.perf_counter()
    finally:
        queue_services.audit_record_select, audit_services.audit_seal, publish.deliver = originals
    # For comparison: what publishing every sealed event on its own (one group send each) costs, timed
    # on the first 10,000 (all 100,000 overran the publisher's 10 s timeout).
    each = None
    if redis and published:
        sample_events = published[:10_000]
        limit = publish.PUBLISH_EACH_MAX
        publish.PUBLISH_EACH_MAX = len(sample_events)
        try:
            started = time.perf_counter()
            publish._publish_many(sample_events)
            each = (len(sample_events), time.perf_counter() - started)
        finally:
            publish.PUBLISH_EACH_MAX = limit
    if listener is not None:
        async_to_sync(layer.group_discard)(publish.LIVE_GROUP, listener)
    live = Session.objects.filter(pool__name=pool_name, status__in=[SessionStatus.WAITING, SessionStatus.ACTIVE])
    positions = sorted(live.values_list("position", flat=True))
    promoted = min(stale_active, fresh)
    reaped_rows = AuditEvent.objects.filter(event_type="session.reaped", id__gt=0)
    sample = reaped_rows.order_by("-id").first()
    ok = (counts["reaped_waiting"] == stale - stale_active and counts["reaped_active"] == stale_active
          and Session.objects.filter(pool__name=pool_name).count() == fresh  # the reaped rows are gone
          and not LabClaim.objects.filter(session__pool__name=pool_name).exists()
          and positions == [0] * promoted + list(range(1, fresh - promoted + 1))
          and AuditEvent.objects.count() - audit_before == stale + promoted
          and reaped_rows.count() == stale
          and sample is not None and sample.metadata == {
              "pool": pool_name, "from": "waiting", "last_seen_at": last_seen.isoformat()}
          and not AuditEvent.objects.filter(sequence_num__isnull=True).exists())
    if explain:  # the slowest statements of the reaping transaction, its commit and the seal
        slowest = sorted(capture.captured_queries, key=lambda q: -float(q["time"]))[:8]
        plans += ["  slowest statements (s, SQL):"] + [f"    {float(q['time']):6.3f}  {q['sql'][:150]}" for q in slowest]
        plans.append(f"  ({len(capture.captured_queries)} statements in all)")
    return {"seeded": seeded, "statements": t1 - t0, "journal_insert": spent["journal_insert"],
            "commit": t2 - t1 - spent["seal"], "seal": spent["seal"] - spent["publish"],
            "publish": spent["publish"], "publish_each": each, "sealed": len(published), "total": t2 - t0,
            "counts": counts, "ok": ok, "audit_rows": AuditEvent.objects.count() - audit_before, "plans": plans}


# --------------------------------------------------------------------------- report

def rps(runs: list[dict]) -> float:
    return sum(r["requests"] for r in runs) / sum(r["elapsed"] for r in runs)


def fast_path_batches(port: int) -> dict[str, tuple[float, float]]:
    """{endpoint: (requests served, batches)} of the fast path, from the server's /metrics."""
    import re
    import urllib.request

    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10).read().decode()
    served = dict(re.findall(r'^labmanager_remote_lab_fast_path_total\{endpoint="(\w+)",outcome="served"\} (\S+)$',
                             text, re.M))
    batches = dict(re.findall(r'^labmanager_remote_lab_fast_path_batches_total\{endpoint="(\w+)"\} (\S+)$', text, re.M))
    return {name: (float(served.get(name, 0)), float(batches[name])) for name in batches}


def report(results: dict | None, counts: dict, reaping: dict | None, args, database: str, batches=None):
    if results:
        report_http(results, counts, args, database)
    if batches:
        print("durable server's fast path, whole run: " + "; ".join(
            f"{name} {served:,.0f} requests in {n:,.0f} batches ({served / n:.1f} a batch)"
            for name, (served, n) in batches.items() if n))
    if reaping:
        c = reaping["counts"]
        in_transaction = reaping["statements"]
        committed = in_transaction + reaping["commit"]  # the goal counts the commit (deferred checks run there)
        met = "met" if committed < GOAL_REAP_SECONDS else "NOT met"
        if reaping["plans"]:
            print("\nPlans of the reaping's statements on the sessions table (EXPLAIN):")
            print("\n".join(reaping["plans"]))
        print(f"\nReaping {args.stale:,} stale sessions ({c['reaped_waiting']:,} waiting, {c['reaped_active']:,} active "
              f"holding lab claims; {args.fresh:,} live sessions renumbered, {c['promoted']} promoted), {database}:")
        print(f"  reaping, committed           {committed:6.2f} s  (goal < {GOAL_REAP_SECONDS:g} s: {met})")
        print(f"  reaping transaction          {in_transaction:6.2f} s")
        rows = c["reaped_waiting"] + c["reaped_active"]
        pg = database.startswith("PostgreSQL")
        print(f"    reap and journal           {reaping['journal_insert']:6.2f} s  " + (
            f"(one statement: DELETE ... RETURNING feeding the INSERT ... SELECT of {rows:,} session.reaped rows)"
            if pg else f"(INSERT ... SELECT of {rows:,} session.reaped rows; the DELETE is counted below)"))
        print(f"    other statements           {in_transaction - reaping['journal_insert']:6.2f} s  "
              f"(active ones read and locked, claims, {'' if pg else 'DELETE, '}renumber, promote)")
        print(f"  its commit                   {reaping['commit']:6.2f} s")
        print(f"  audit seal after the commit  {reaping['seal']:6.2f} s  ({reaping['sealed']:,} rows hashed into the chain)")
        print(f"  publication (doorbell, webhooks) {reaping['publish']:6.2f} s  "
              f"({'channels_redis, one ring per seal batch' if args.redis else 'in-memory layer, no live client'})")
        if reaping["publish_each"] is not None:
            n, seconds = reaping["publish_each"]
            print(f"    for comparison, one group send per event: {seconds:.2f} s for {n:,} events "
                  f"({seconds / n * 1e6:.0f} µs each, ~{seconds / n * reaping['sealed']:.0f} s for all {reaping['sealed']:,})")
        print(f"  total                        {reaping['total']:6.2f} s  (result checked: "
              f"{'ok' if reaping['ok'] else 'WRONG'}; seeding took {reaping['seeded']:.1f} s)")


def report_http(results: dict, counts: dict, args, database: str):
    names = [name for name in ("durable", "django", "asgi") if (name, FLOOR) in results]
    print()
    print(f"{'endpoint':<26} " + " ".join(f"{name + ' req/s':>13}" for name in (*names, "memory"))
          + f" {'ratio':>6} {'queries':>8}   server CPU ms/req ({', '.join((*names, 'memory'))})  goal ~{GOAL_RPS}/s")
    for endpoint in (*ENDPOINTS, FLOOR):
        figures, cpus = [], []
        for name in (*names, "memory"):
            runs = results[(name, endpoint)]
            figures.append(rps(runs))
            cpus.append(sum(r["server_cpu"] * r["elapsed"] for r in runs) / sum(r["requests"] for r in runs) * 1000)
        best = figures[0]  # the real server (the fast path)
        if endpoint == FLOOR:
            queries, met = 0, "(framework floor)"
        else:
            queries, met = counts[endpoint][0], "met" if best >= GOAL_RPS * 0.9 else "NOT met"
        print(f"{endpoint:<26} " + " ".join(f"{f:>13.1f}" for f in figures)
              + f" {best / figures[-1]:>6.2f} {queries:>8}   " + " / ".join(f"{c:.2f}" for c in cpus) + f"  {met}")
    print(f"({database}; one daphne process each; {args.rounds} interleaved rounds x {args.seconds:g} s per endpoint "
          f"and server; {args.concurrency} concurrent clients; {os.cpu_count()} CPUs shared by client and servers; "
          f"durable = the fast path (apps/sessions/api/fast.py); django = SESSION_FAST_PATH=false, through "
          f"Django and DRF on the thread pool; asgi = also HTTP_THREADS=0, Django's ASGI handler; queries: "
          f"one request through Django; the fast path runs them once per batch)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint, server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=20000, help="per endpoint, server and round")
    parser.add_argument("--stale", type=int, default=100_000)
    parser.add_argument("--stale-active", type=int, default=100)
    parser.add_argument("--fresh", type=int, default=1000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-reap", action="store_true")
    parser.add_argument("--sqlite", action="store_true", help="SQLite even when PostgreSQL answers")
    parser.add_argument("--redis", default="", metavar="URL",
                        help="channels_redis at URL for the reaping's publication (with one listening channel)")
    parser.add_argument("--no-asgi", action="store_true",
                        help="skip the server with SESSION_FAST_PATH=false and HTTP_THREADS=0 (Django's ASGI handler)")
    parser.add_argument("--explain", action="store_true", help="print the plans of the reaping's statements")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60)
    args.rounds = max(1, min(args.rounds, 10))
    args.concurrency = max(1, min(args.concurrency, 256))
    args.stale = min(args.stale, 1_000_000)
    args.stale_active = min(args.stale_active, args.stale, 1000)
    return args


def main() -> int:
    args = parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    use_pg = not args.sqlite and pg_available()
    storage = ROOT / "var" / "bench" / "session-files"
    env = bench_env(use_pg, storage)
    database = "PostgreSQL" if use_pg else "SQLite (WAL)" + ("" if args.sqlite else ", PostgreSQL unavailable")
    servers = []
    try:
        if use_pg:
            pg_admin(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            pg_admin(f'CREATE DATABASE "{PG_DB}"')
        else:
            SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=600)
        print(f"Database: {database}, migrated in {time.perf_counter() - t0:.1f} s", flush=True)
        os.environ.update(env)
        if args.redis:  # this process only (the reaping's channel layer); the daphne servers keep the default
            os.environ.update(REDIS_URL=args.redis, REDIS_PREFIX="lm-bench-sessions")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        counts = query_counts()
        for endpoint, (n, sqls) in counts.items():
            print(f"SQL queries of {endpoint}: {n}")
            for sql in sqls:
                print(f"    {sql[:160]}{'…' if len(sql) > 160 else ''}")

        results = batches = None
        if not args.skip_http:
            measured = {}
            variants = [("durable", "labmanager.asgi:application", env),
                        ("django", "labmanager.asgi:application", dict(env, SESSION_FAST_PATH="false"))]
            if not args.no_asgi:  # the same server with every request through Django's ASGI handler
                variants.append(("asgi", "labmanager.asgi:application",
                                 dict(env, SESSION_FAST_PATH="false", HTTP_THREADS="0")))
            variants.append(("memory", "bench.sessions:reference_app", env))
            for name, app, server_env in variants:
                proc, port = start_daphne(app, server_env)
                servers.append(proc)
                measured[name] = (port, proc.pid)
            print("daphne: " + ", ".join(f"{name} (pid {pid}) on :{port}" for name, (port, pid) in measured.items())
                  + "; measuring...", flush=True)
            results = asyncio.run(measure(measured, args))
            batches = fast_path_batches(measured["durable"][0])
            for proc in servers:
                stop(proc)
        reaping = None
        if not args.skip_reap:
            print(f"Reaping: seeding {args.stale:,} stale sessions...", flush=True)
            reaping = time_reaping(args.stale, args.stale_active, args.fresh, redis=bool(args.redis),
                                   explain=args.explain)
        report(results, counts, reaping, args, database, batches)
        return 0 if reaping is None or reaping["ok"] else 1
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    finally:
        for proc in servers:
            stop(proc)
        if use_pg:
            if "django.db" in sys.modules:
                from django.db import connections

                connections.close_all()
            pg_admin(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
