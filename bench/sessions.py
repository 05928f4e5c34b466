"""Benchmark the remote-lab session API as deployed, side by side with neops-remote-lab 1.4.0: requests per
second and server CPU per request of POST /session, GET /session/{id} and POST /session/heartbeat at 32
concurrent clients; then reaping 100,000 stale sessions.

Run from the repository root (`make bench`):

    .venv/bin/python -m bench.sessions [--seconds 5] [--rounds 3] [--concurrency 32] [--stale 100000]

What it does:
1. Creates, migrates and (at the end) drops the PostgreSQL database lm_bench_sessions on 127.0.0.1:5432;
   Redis at REDIS_URL (default redis://127.0.0.1:6379/0, keys under the prefix lm-bench-sessions) is the
   cache (the per-principal rate limit) and the channel layer, as in production.
2. Counts the SQL queries of one request of each endpoint in-process (Django's test client, same database).
3. Starts LabManager with the production command line, `bin/serve all` (nginx in front of gunicorn,
   labmanager.wsgi with its default WEB_PROCESSES = cores and WEB_THREADS, and daphne), with
   labmanager.settings_production (DEBUG off, the production middleware, JSON log lines at LOG_LEVEL),
   on free 127.0.0.1 ports; the clients are anonymous from loopback and say X-Forwarded-Proto: https, as
   a TLS-terminating load balancer in front of nginx would. SESSION_QUEUE_MAX=0 (no bound on waiting
   sessions: the rounds create tens of thousands); the pool has no workers, so every session waits (GET
   reads a waiting session's position).
4. Starts neops-remote-lab 1.4.0 (PyPI; installed by this script with pip into var/bench/neops-venv, a
   Python 3.12 venv, when missing; `--neops-python` names the interpreter) as its README says:
   `neops-remote-lab --host 127.0.0.1 --port P` (uvicorn, one process, its FastAPI app
   neops_remote_lab.server:app, state in memory), with a stub `netlab` first on its PATH (the server runs
   `netlab version` before it starts and `netlab down` at startup; the stub only prints) and its own TMPDIR
   (its single-instance lock files). Its paths are at the root, ours under /api/remote-lab: both are
   checked to answer the same contract (status codes, body fields) before the measurement.
5. Measures each endpoint, and GET /healthz (no database: each framework's floor), on both servers in
   interleaved rounds (the order reversed every round): `--concurrency` keep-alive connections, each with
   one request in flight, bounded by `--seconds` and `--max-requests` per round (bench/common.py
   bounded_load). The client is the harness's small asyncio HTTP/1.1 client, bench/common.py Connection
   (not httpx: on 2 shared cores httpx's own CPU would cap the figures). Every
   response's status code (and the body's fields) is checked. Server CPU is the user+system CPU of every
   process of each server (bin/serve and all its descendants: nginx master and workers, gunicorn arbiter
   and workers, daphne; neops's one uvicorn process), read from /proc (psutil when installed) before and
   after each round.
6. Reaping (in this process, after the servers stopped): bulk-creates `--stale` stale sessions in their own
   pool (most waiting, `--stale-active` of them active, each holding a claim on its worker's running lab)
   plus 1,000 fresh waiting sessions behind them, VACUUM ANALYZEs (as autovacuum would), then times
   `services.sessions_reap()` (the schedule's call) in parts: the reaping transaction (the statement that
   deletes the reaped sessions and journals one audit row each; the others), its commit, the audit seal
   after the commit and the publication within the seal (channels_redis, with one listening channel; and,
   for comparison, one group send per event for 10,000 events). `--explain` prints the plans of the
   reaping's statements and its slowest statements. Checks the result.
Always stops both servers (also on Ctrl-C or SIGTERM) and drops the database.
Goals (issue 17): each endpoint >= 1.0x neops-remote-lab's requests/s; server CPU per request <= 2.0 ms for
heartbeat and GET, <= 3.0 ms for POST /session. Reaping (issue 5): < 2 s.
"""

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.common import (BENCH_DIR, HOST, ROOT, Connection, Failure, ServeAll, Table, argument_parser,
                          bounded_load, cpu_ms_per_request, free_port, migrate, pg_available, pg_create, pg_drop,
                          process_tree, production_env, requests_per_second, run, setup_django, spawn,
                          stop_process_group, wait_http)

PG_DB = "lm_bench_sessions"
API = "/api/remote-lab"
ENDPOINTS = ("POST /session", "GET /session/{id}", "POST /session/heartbeat")
FLOOR = "GET /healthz"  # no database, no authentication: each framework's own cost per request
GOAL_RATIO = 1.0
GOAL_CPU_MS = {"POST /session": 3.0, "GET /session/{id}": 2.0, "POST /session/heartbeat": 2.0}
GOAL_REAP_SECONDS = 2.0
NEOPS_VERSION = "1.4.0"
NEOPS_VENV = BENCH_DIR / "neops-venv"
NEOPS_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"
OURS, NEOPS = "labmanager", "neops"


# --------------------------------------------------------------------------- the session endpoints, checked

@dataclass
class Server:
    """One server under test: where it listens, the root of its process tree, its path prefix and the headers
    its clients send."""

    name: str
    port: int
    pid: int
    prefix: str
    headers: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)  # the sessions created on it

    def connection(self) -> Connection:
        return Connection(self.port, self.headers)


async def one(server: Server, conn: Connection, endpoint: str, n: int) -> None:
    """One request of `endpoint`, its answer checked; POST /session appends the new id to server.ids."""
    api = server.prefix
    if endpoint == "POST /session":
        status, body = await conn.request("POST", api + "/session")
        if status != 201:
            raise Failure(f"{server.name}: POST /session answered {status}: {body[:300]!r}")
        server.ids.append(json.loads(body)["session_id"])
    elif endpoint == "GET /session/{id}":
        status, body = await conn.request("GET", f"{api}/session/{server.ids[n % len(server.ids)]}")
        if status != 200 or b'"position"' not in body:
            raise Failure(f"{server.name}: GET /session/{{id}} answered {status}: {body[:300]!r}")
    elif endpoint == FLOOR:
        status, body = await conn.request("GET", api + "/healthz")
        if status != 204:
            raise Failure(f"{server.name}: GET /healthz answered {status}: {body[:300]!r}")
    else:
        status, body = await conn.request("POST", api + "/session/heartbeat",
                                          {"X-Session-ID": server.ids[n % len(server.ids)]})
        if status != 204:
            raise Failure(f"{server.name}: POST /session/heartbeat answered {status}: {body[:300]!r}")


async def load(server: Server, connections: list[Connection], endpoint: str, *, seconds: float,
               max_requests: int, cpu: bool = False) -> dict:
    """Every connection keeps one request of `endpoint` in flight, for at most `seconds` and at most
    `max_requests` requests in all (the harness's bounded_load; `cpu`: with the server's and this client's CPU
    seconds)."""

    async def request(worker: int, n: int) -> None:
        await one(server, connections[worker], endpoint, n)

    return await bounded_load(request, workers=len(connections), seconds=seconds, max_requests=max_requests,
                              cpu_pids=(server.pid,) if cpu else ())


async def check_contract(servers: list[Server]) -> list[str]:
    """The same requests on every server: status codes and body fields must match (ours may add fields).
    Returns the lines to print; raises Failure on a difference."""
    unknown = str(uuid.uuid4())
    seen: dict[str, dict[str, tuple]] = {}
    for server in servers:
        conn = server.connection()
        try:
            api, answers = server.prefix, {}
            status, body = await conn.request("POST", api + "/session")
            created = json.loads(body)
            answers["POST /session"] = (status, sorted(created))
            session_id = created["session_id"]
            status, body = await conn.request("GET", f"{api}/session/{session_id}")
            answers["GET /session/{id}"] = (status, sorted(json.loads(body)))
            status, _ = await conn.request("POST", api + "/session/heartbeat", {"X-Session-ID": session_id})
            answers["POST /session/heartbeat"] = (status, [])
            status, _ = await conn.request("GET", f"{api}/session/{unknown}")
            answers["GET /session/{unknown}"] = (status, [])
            status, _ = await conn.request("POST", api + "/session/heartbeat", {"X-Session-ID": unknown})
            answers["POST /session/heartbeat (unknown id)"] = (status, [])
            status, _ = await conn.request("POST", api + "/session/heartbeat")
            answers["POST /session/heartbeat (no X-Session-ID)"] = (status, [])
            status, _ = await conn.request("DELETE", f"{api}/session/{session_id}")
            answers["DELETE /session/{id}"] = (status, [])
            status, _ = await conn.request("GET", api + "/healthz")
            answers[FLOOR] = (status, [])
        finally:
            conn.close()
        seen[server.name] = answers
    lines, differences = [], []
    reference = seen[servers[-1].name]  # neops
    for request, (status, fields) in reference.items():
        row = []
        for server in servers:
            their_status, their_fields = seen[server.name][request]
            row.append(f"{server.name} {their_status}" + (f" {{{', '.join(their_fields)}}}" if their_fields else ""))
            if their_status != status or not set(fields) <= set(their_fields):
                differences.append(f"{request}: {server.name} answered {their_status} {their_fields}, "
                                   f"{servers[-1].name} {status} {fields}")
        lines.append(f"  {request:<42} " + "; ".join(row))
    if differences:
        raise Failure("the servers do not answer the same contract:\n  " + "\n  ".join(differences))
    return lines


async def measure(servers: list[Server], args, endpoints=(*ENDPOINTS, FLOOR)) -> dict:
    """Interleaved rounds of each endpoint on each server (the order of the servers reversed every round).
    Returns {(server name, endpoint): [round results]}."""
    results: dict[tuple[str, str], list[dict]] = {}
    connections = {server.name: [server.connection() for _ in range(args.concurrency)] for server in servers}
    try:
        for server in servers:  # warm-up (unmeasured); also makes the first sessions that GET and heartbeat use
            for endpoint in ENDPOINTS:
                await load(server, connections[server.name], endpoint, seconds=args.warmup,
                           max_requests=args.max_requests)
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for endpoint in endpoints:
                for server in order:
                    result = await load(server, connections[server.name], endpoint, seconds=args.seconds,
                                        max_requests=args.max_requests, cpu=True)
                    del result["latencies"]  # not reported here
                    results.setdefault((server.name, endpoint), []).append(result)
                    print(f"  round {round_no + 1}  {server.name:<10} {endpoint:<24} "
                          f"{result['requests'] / result['elapsed']:8.1f} req/s  (CPU: server "
                          f"{result['server_cpu'] / result['elapsed'] * 100:.0f} %, client "
                          f"{result['client_cpu'] / result['elapsed'] * 100:.0f} % of a core; "
                          f"{len(server.ids):,} sessions)", flush=True)
    finally:
        for conns in connections.values():
            for conn in conns:
                conn.close()
    return results


# --------------------------------------------------------------------------- the two servers

def bench_env(redis_url: str, log_level: str) -> dict:
    """The environment of LabManager's servers and of this process (query counts, reaping)."""
    return production_env(LOG_LEVEL=log_level.upper(), DATABASE_URL=f"postgres://postgres@{HOST}:5432/{PG_DB}",
                          REDIS_URL=redis_url, REDIS_PREFIX="lm-bench-sessions", SESSION_QUEUE_MAX="0",
                          SESSION_STORAGE_DIR=str(BENCH_DIR / "session-files"), SESSION_DEFAULT_POOL="default",
                          SESSION_ANONYMOUS_NETWORKS="127.0.0.1/32,::1/128",
                          SESSION_API_RATE_LIMIT="100000/min",  # on, but far above what one address sends here
                          SQLITE_PATH=None)


def ensure_neops(python: str) -> Path:
    """neops-remote-lab NEOPS_VERSION in its own Python 3.12 venv under var/bench/ (pip from PyPI when
    missing); returns its `neops-remote-lab` command."""
    command = NEOPS_VENV / "bin" / "neops-remote-lab"
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}  # not our project
    probe = [str(NEOPS_VENV / "bin" / "python"), "-c",
             "import importlib.metadata as m; print(m.version('neops-remote-lab'))"]
    if command.exists():
        found = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=env)
        if found.returncode == 0 and found.stdout.strip() == NEOPS_VERSION:
            return command
    if not Path(python).exists():
        raise Failure(f"neops-remote-lab needs Python 3.12: {python} not found (--neops-python)")
    print(f"Installing neops-remote-lab {NEOPS_VERSION} into {NEOPS_VENV.relative_to(ROOT)} (pip, PyPI)...",
          flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(NEOPS_VENV)], check=True, timeout=300, env=env)
    subprocess.run([str(NEOPS_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", f"neops-remote-lab=={NEOPS_VERSION}"], check=True, timeout=900,
                   env=env)
    return command


STUB_NETLAB = """#!/bin/sh
# bench.sessions: a stub of netlab for neops-remote-lab, which runs `netlab version` before it starts and
# `netlab down ...` at startup. The benchmark never uploads a lab: nothing real ever runs.
echo "netlab stub (bench.sessions): $*"
exit 0
"""


@contextlib.contextmanager
def neops_server(command: Path, log_level: str):
    """neops-remote-lab on a free 127.0.0.1 port, one process (its CLI runs uvicorn with its FastAPI app);
    yields (port, pid)."""
    stub_dir, tmp = BENCH_DIR / "neops-stub-bin", BENCH_DIR / "neops-tmp"
    stub_dir.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    stub = stub_dir / "netlab"
    stub.write_text(STUB_NETLAB)
    stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{stub_dir}:{NEOPS_VENV / 'bin'}:{os.environ.get('PATH', '')}", TMPDIR=str(tmp))
    env.pop("PYTHONPATH", None)
    proc = None
    try:
        for _attempt in range(3):  # the free port may be taken between the probe and the bind
            port = free_port()
            proc = spawn([str(command), "--host", HOST, "--port", str(port), "--log-level", log_level], env,
                         BENCH_DIR / "sessions-neops.log", cwd=tmp)
            if wait_http(port, "/healthz", proc):
                break
            stop_process_group(proc)
            proc = None
        else:
            raise Failure(f"neops-remote-lab did not start (see {BENCH_DIR / 'sessions-neops.log'})")
        yield port, proc.pid
    finally:
        stop_process_group(proc)


# --------------------------------------------------------------------------- in-process parts

def query_counts() -> dict[str, tuple[int, list[str]]]:
    """SQL queries of one request of each endpoint (test client, anonymous from 127.0.0.1)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    assert client.post(API + "/session", secure=True).status_code == 201  # the pool's first session creates it
    counts = {}
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(API + "/session", secure=True)
    assert response.status_code == 201, response.content
    counts["POST /session"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    session_id = response.json()["session_id"]
    client.get(f"{API}/session/{session_id}", secure=True)  # the first read may run the pool's maintenance pass
    time.sleep(1.1)  # past the touch resolution: a poll then writes last_seen_at, as most polls do
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(f"{API}/session/{session_id}", secure=True)
    assert response.status_code == 200, response.content
    counts["GET /session/{id}"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    with CaptureQueriesContext(connection) as ctx:
        response = client.post(API + "/session/heartbeat", secure=True, HTTP_X_SESSION_ID=session_id)
    assert response.status_code == 204, response.content
    counts["POST /session/heartbeat"] = (len(ctx), [q["sql"] for q in ctx.captured_queries])
    return counts


# --------------------------------------------------------------------------- reaping

def seed_stale(stale: int, stale_active: int, fresh: int) -> tuple[str, datetime]:
    """A pool with `stale` stale sessions (the first `stale_active` active on their own worker, holding a
    claim on its running lab) and `fresh` live waiting sessions behind them. Bulk inserts; status written
    directly, which is fine for a benchmark but not how the application moves sessions."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from apps.sessions.models import LabClaim, LabStatus, Session, SessionLab, SessionPool, SessionStatus
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

    from apps.sessions.models import SessionPool, SessionStatus
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
    from apps.sessions.models import LabClaim, Session, SessionStatus
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

def report_http(results: dict, counts: dict, args):
    table = Table(("endpoint", "<26"), ("ours req/s", ">11.1f"), ("neops req/s", ">12.1f"), ("ours/neops", ">10.2f"),
                  ("CPU ms/req ours", ">15.2f", "   "), ("neops", ">6.2f"), ("client", ">7.2f"),
                  ("queries", ">7", "   "), ("", "", "   "),
                  trailer=f"goals: ratio >= {GOAL_RATIO:g}, CPU")
    print()
    table.print_header()
    for endpoint in (*ENDPOINTS, FLOOR):
        ours, neops = results[(OURS, endpoint)], results[(NEOPS, endpoint)]
        ratio = requests_per_second(ours) / requests_per_second(neops)
        ours_cpu = cpu_ms_per_request(ours)
        if endpoint == FLOOR:
            queries, verdict = "-", "(each framework's floor, no goal)"
        else:
            queries = str(counts[endpoint][0])
            goal = GOAL_CPU_MS[endpoint]
            verdict = (f"ratio {'met' if ratio >= GOAL_RATIO else 'NOT met'}, "
                       f"CPU <= {goal:g} ms {'met' if ours_cpu <= goal else 'NOT met'}")
        table.print_row(endpoint, requests_per_second(ours), requests_per_second(neops), ratio, ours_cpu,
                        cpu_ms_per_request(neops), cpu_ms_per_request(ours, "client_cpu"), queries, verdict)
    print(f"(PostgreSQL + Redis; ours = bin/serve all, its default processes (gunicorn {os.cpu_count()} x "
          f"{os.environ.get('WEB_THREADS', 4)} threads, nginx auto, daphne), settings_production, "
          f"LOG_LEVEL={args.log_level.upper()}; neops = neops-remote-lab {NEOPS_VERSION}, one uvicorn process, "
          f"--log-level {args.log_level}; {args.rounds} interleaved rounds x {args.seconds:g} s per endpoint and "
          f"server; {args.concurrency} concurrent keep-alive clients; {os.cpu_count()} CPUs shared by the client "
          f"and both servers; CPU ms/req: all processes of the server, and this client's, per request of ours)")


def report_reaping(reaping: dict, args):
    c = reaping["counts"]
    in_transaction = reaping["statements"]
    committed = in_transaction + reaping["commit"]  # the goal counts the commit (deferred checks run there)
    met = "met" if committed < GOAL_REAP_SECONDS else "NOT met"
    if reaping["plans"]:
        print("\nPlans of the reaping's statements on the sessions table (EXPLAIN):")
        print("\n".join(reaping["plans"]))
    print(f"\nReaping {args.stale:,} stale sessions ({c['reaped_waiting']:,} waiting, {c['reaped_active']:,} active "
          f"holding lab claims; {args.fresh:,} live sessions renumbered, {c['promoted']} promoted), PostgreSQL:")
    print(f"  reaping, committed           {committed:6.2f} s  (goal < {GOAL_REAP_SECONDS:g} s: {met})")
    print(f"  reaping transaction          {in_transaction:6.2f} s")
    rows = c["reaped_waiting"] + c["reaped_active"]
    print(f"    reap and journal           {reaping['journal_insert']:6.2f} s  (one statement: DELETE ... RETURNING "
          f"feeding the INSERT ... SELECT of {rows:,} session.reaped rows)")
    print(f"    other statements           {in_transaction - reaping['journal_insert']:6.2f} s  "
          f"(active ones read and locked, claims, renumber, promote)")
    print(f"  its commit                   {reaping['commit']:6.2f} s")
    print(f"  audit seal after the commit  {reaping['seal']:6.2f} s  ({reaping['sealed']:,} rows hashed into the chain)")
    print(f"  publication (doorbell, webhooks) {reaping['publish']:6.2f} s  (channels_redis, one ring per seal batch)")
    if reaping["publish_each"] is not None:
        n, seconds = reaping["publish_each"]
        print(f"    for comparison, one group send per event: {seconds:.2f} s for {n:,} events "
              f"({seconds / n * 1e6:.0f} µs each, ~{seconds / n * reaping['sealed']:.0f} s for all {reaping['sealed']:,})")
    print(f"  total                        {reaping['total']:6.2f} s  (result checked: "
          f"{'ok' if reaping['ok'] else 'WRONG'}; seeding took {reaping['seeded']:.1f} s)")


def parse_args():
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--seconds", type=float, default=5.0, help="per endpoint, server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=20000, help="per endpoint, server and round")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                        help="both servers' log level (their default: info, one line per request each)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", metavar="URL")
    parser.add_argument("--neops-python", default=os.environ.get("NEOPS_PYTHON", NEOPS_PYTHON),
                        help="a Python 3.12 for neops-remote-lab's venv")
    parser.add_argument("--stale", type=int, default=100_000)
    parser.add_argument("--stale-active", type=int, default=100)
    parser.add_argument("--fresh", type=int, default=1000)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-reap", action="store_true")
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
    if not pg_available():
        print("PostgreSQL does not answer on 127.0.0.1:5432: this benchmark needs it (and Redis).", file=sys.stderr)
        return 1
    env = bench_env(args.redis, args.log_level)
    created = False
    try:
        pg_create(PG_DB)
        created = True
        t0 = time.perf_counter()
        migrate(env)
        print(f"Database: PostgreSQL {PG_DB}, migrated in {time.perf_counter() - t0:.1f} s; Redis {args.redis}",
              flush=True)
        setup_django(env)
        logging.getLogger().setLevel(logging.WARNING)  # this process: no line per test request
        counts = query_counts()
        for endpoint, (n, sqls) in counts.items():
            print(f"SQL queries of {endpoint}: {n}")
            for sql in sqls:
                print(f"    {sql[:160]}{'…' if len(sql) > 160 else ''}")
        from django.db import connections

        connections.close_all()

        results = None
        if not args.skip_http:
            command = ensure_neops(args.neops_python)
            with ServeAll(env, BENCH_DIR / "sessions-labmanager.log") as ours, \
                    neops_server(command, args.log_level) as (neops_port, neops_pid):
                servers = [Server(OURS, ours.port, ours.pid, API, {"X-Forwarded-Proto": "https"}),
                           Server(NEOPS, neops_port, neops_pid, "")]
                print(f"ours: bin/serve all (pid {ours.pid}, {len(process_tree(ours.pid))} "
                      f"processes) on {ours.url}; neops-remote-lab {NEOPS_VERSION} (pid {neops_pid}) on "
                      f"http://{HOST}:{neops_port}", flush=True)
                print("Contract (the same requests on both):")
                print("\n".join(asyncio.run(check_contract(servers))))
                print("Measuring...", flush=True)
                results = asyncio.run(measure(servers, args))
        reaping = None
        if not args.skip_reap:
            print(f"Reaping: seeding {args.stale:,} stale sessions...", flush=True)
            reaping = time_reaping(args.stale, args.stale_active, args.fresh, redis=True, explain=args.explain)
        if results:
            report_http(results, counts, args)
        if reaping:
            report_reaping(reaping, args)
        return 0 if reaping is None or reaping["ok"] else 1
    finally:
        if created:
            pg_drop(PG_DB)


if __name__ == "__main__":
    run(main)
