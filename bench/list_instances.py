"""Benchmark: `GET /api/lablet-instances?limit=50` with 10,000 instances, beside a plain DRF view.

Run from the repository root (`make bench`):

    .venv/bin/python bench/list_instances.py [--rows 10000] [--seconds 10] [--rounds 3] [--concurrency 8]

What it does:
1. Creates a fresh database, migrates it, and seeds `--rows` lablet instances
   over a few definitions and workers, in every state (about 10 % terminated, which the default list
   hides). Seeding uses `bulk_create` and writes `status` and the state timestamps directly: that is
   fine for a benchmark (it measures reads), but it is not how the application changes states. The
   database is PostgreSQL (lm_bench_list_instances on 127.0.0.1:5432, dropped at the end) with Redis at
   REDIS_URL (default redis://127.0.0.1:6379/0) as the cache, as in production; `--sqlite` (or PostgreSQL
   not answering) uses a SQLite file under var/bench/ and the in-memory cache instead.
2. Creates an admin user (admins see every instance) and an API key.
3. Counts the SQL queries of one list request in-process (Django test client, same database), at
   several page sizes, to show the count does not grow with the rows.
4. Starts LabManager with the production command line, `bin/serve all` (nginx in front of gunicorn with
   its default processes and threads, and daphne; labmanager.settings_production), on free 127.0.0.1
   ports, with ROOT_URLCONF=bench.urls, which adds the baseline `/api/bench/plain` (see bench/urls.py):
   the same 50 objects, same auth, throttle and renderer, served from memory (built once per process).
   The client says X-Forwarded-Proto: https, as a TLS-terminating load balancer in front of nginx would.
5. Measures both endpoints in interleaved rounds (A B, B A, A B, ...), each round a bounded async
   httpx load loop (at most `--seconds` long and at most `--max-requests` requests), checks every
   response (200 and 50 rows), and prints requests, req/s, p50/p95 latency, the server's CPU per request
   (every process of bin/serve: nginx, gunicorn, daphne) and the ratio list/plain.
6. Always stops the servers (also on Ctrl-C or SIGTERM) and drops the PostgreSQL database.
Goal (issue 17): list/plain >= 0.5, the query count constant.
"""

import asyncio
import logging
import os
import random
import time
from datetime import timedelta

from bench.common import (BENCH_DIR, HOST, ROOT, Failure, ServeAll, Table, argument_parser, bounded_load,
                          fresh_sqlite, percentile, pg_available, pg_create, pg_drop, production_env, run,
                          setup_django)

DB_PATH = BENCH_DIR / "bench.sqlite3"
PG_DB = "lm_bench_list_instances"
LIST_PATH = "/api/lablet-instances?limit=50"
PLAIN_PATH = "/api/bench/plain"
PAGE = 50

def bench_env(args) -> dict:
    """The environment of the servers and of this process (seeding, query counts)."""
    env = production_env(
        ROOT_URLCONF="bench.urls",  # the application's routes and /api/bench/plain
        API_RATE_LIMIT="10000000/s",  # the per-user throttle still runs (one cache call a request), never refuses
        LOG_LEVEL=args.log_level.upper())
    if args.use_pg:
        env.update(DATABASE_URL=f"postgres://postgres@{HOST}:5432/{PG_DB}", REDIS_URL=args.redis,
                   REDIS_PREFIX="lm-bench-list-instances")
    else:
        env["SQLITE_PATH"] = str(DB_PATH)
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
    return env


def parse_args():
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--rows", type=int, default=10_000, help="lablet instances to seed (default 10000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one measured round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint, interleaved (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint first (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per round")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                        help="the server's LOG_LEVEL (production's default: info, one line per request)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", metavar="URL")
    parser.add_argument("--sqlite", action="store_true", help="SQLite and the in-memory cache, not PostgreSQL")
    args = parser.parse_args()
    if args.rows < 100:
        parser.error("--rows must be at least 100 (the page has 50 rows that are not terminated)")
    return args


# --------------------------------------------------------------------------- database

def fresh_database(use_pg: bool):
    if use_pg:
        pg_create(PG_DB)
    else:
        fresh_sqlite(DB_PATH)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


# The states an instance passes through, in order, for each final state (the allowed lifecycle paths).
STAMPS = {
    "pending": [],
    "scheduled": ["scheduled"],
    "instantiating": ["scheduled", "instantiating"],
    "running": ["scheduled", "instantiating", "running"],
    "collecting": ["scheduled", "instantiating", "running", "collecting"],
    "grading": ["scheduled", "instantiating", "running", "collecting", "grading"],
    "stopping": ["scheduled", "instantiating", "running", "stopping"],
    "stopped": ["scheduled", "instantiating", "running", "stopping", "stopped"],
    "archived": ["scheduled", "instantiating", "running", "stopping", "stopped", "archived"],
    "terminated": ["terminated"],
}
STATE_WEIGHTS = {
    "pending": 15, "scheduled": 15, "instantiating": 5, "running": 20, "collecting": 3, "grading": 2,
    "stopping": 3, "stopped": 12, "archived": 15, "terminated": 10,
}
ON_A_WORKER = {"instantiating", "running", "collecting", "grading", "stopping", "stopped", "archived"}


def seed(rows: int):
    """Bulk-insert `rows` instances (see the module docstring); returns (admin user, raw API key)."""
    from django.utils import timezone

    from apps.lablets.models import LabletDefinition, LabletInstance
    from apps.workers.models import Worker
    from apps.identity.services import api_key_create, user_ensure_with_role

    admin, _ = user_ensure_with_role(username="bench-admin", role="admin", actor="bench")
    instructors = [user_ensure_with_role(username=f"bench-instructor-{i}", role="instructor", actor="bench")[0]
                   for i in range(3)]
    _, raw_key = api_key_create(user=admin, actor="bench", name="bench")

    yaml = "lab:\n  title: bench\nnodes: []\nlinks: []\n"
    definitions = LabletDefinition.objects.bulk_create([
        LabletDefinition(
            name=f"bench-lab-{i}", version="1.0.0", description=f"Benchmark lab {i}", cml_lab_yaml=yaml,
            content_hash=LabletDefinition.hash_yaml(yaml), cpu_cores=4, memory_gb=8, storage_gb=50, node_count=5,
            port_definitions=[{"name": "console", "device_name": "r1", "console_type": "serial"}],
            created_by=instructors[i % len(instructors)],
        )
        for i in range(5)
    ])
    workers = Worker.objects.bulk_create([
        Worker(name=f"bench-worker-{i}", status="running", aws_instance_id=f"i-bench{i:012x}",
               instance_type="m5zn.metal", cpu_cores=48, memory_gb=192, storage_gb=500, max_nodes=100)
        for i in range(4)
    ])

    rng = random.Random(42)
    states, weights = zip(*STATE_WEIGHTS.items())
    now = timezone.now()
    objs = []
    for n in range(rows):
        state = rng.choices(states, weights)[0]
        start = now + timedelta(minutes=rng.randint(-30 * 24 * 60, 30 * 24 * 60))
        instance = LabletInstance(
            definition=definitions[n % len(definitions)],
            owner_id=f"student-{n:05d}",
            created_by=instructors[n % len(instructors)],
            timeslot_start=start,
            timeslot_end=start + timedelta(hours=2),
            reservation_id=f"res-{n:06d}" if n % 3 else "",
            priority=rng.randint(1, 10),
            status=state,
        )
        if state in ON_A_WORKER:
            instance.worker = workers[n % len(workers)]
            instance.cml_lab_id = f"{n:08x}-lab"
        stamp = start - timedelta(hours=1)
        for step in STAMPS[state]:
            stamp += timedelta(minutes=5)
            setattr(instance, f"{step}_at", stamp)
        if state in ("grading", "stopping", "stopped", "archived"):
            instance.artifacts = [{"name": "running-config.txt", "size": 2048}]
        if state in ("stopped", "archived"):
            instance.grading_result = {"score": rng.randint(0, 100), "max_score": 100, "passed": True}
        objs.append(instance)
    LabletInstance.objects.bulk_create(objs, batch_size=1000)
    return admin, raw_key


def query_counts(raw_key: str) -> dict[int, tuple[int, list[str]]]:
    """SQL queries of one list request in-process, per page size (after one warm-up request)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME=HOST, headers={"X-API-Key": raw_key})
    client.get(LIST_PATH, secure=True)  # warm-up: the first request of a key also stamps last_used_at
    counts = {}
    for limit in (10, 50, 200):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"/api/lablet-instances?limit={limit}", secure=True)
        assert response.status_code == 200, response.content[:500]
        assert len(response.json()["lablet_instances"]) == limit
        counts[limit] = (len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries])
    connection.close()
    return counts


# --------------------------------------------------------------------------- load

async def load(client, path: str, *, seconds: float, max_requests: int, concurrency: int,
               server_pid: int | None = None) -> dict:
    """Keep `concurrency` requests in flight for at most `seconds` and at most `max_requests` requests, every
    answer checked (200, a page of PAGE rows); with `server_pid`, the server's and this client's CPU seconds."""

    async def send(worker: int, n: int):
        return await client.get(path)

    def check(response) -> None:
        if response.status_code != 200:
            raise Failure(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        rows = response.json().get("lablet_instances")
        if not isinstance(rows, list) or len(rows) != PAGE:
            raise Failure(f"GET {path} returned {len(rows) if isinstance(rows, list) else rows!r} rows, not {PAGE}")

    return await bounded_load(send, check=check, workers=concurrency, seconds=seconds, max_requests=max_requests,
                              cpu_pids=(server_pid,) if server_pid else ())


async def measure(base: str, raw_key: str, args, server_pid: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": raw_key, "X-Forwarded-Proto": "https"},
                                 limits=limits,
                                 timeout=httpx.Timeout(30.0)) as client:
        # Same body from both endpoints, or the comparison means nothing.
        listed, plain = (await client.get(LIST_PATH)), (await client.get(PLAIN_PATH))
        for response in (listed, plain):
            if response.status_code != 200:
                raise Failure(f"{response.request.url} answered {response.status_code}: {response.text[:300]}")
        if listed.json() != plain.json():
            raise Failure("the plain view and the list do not return the same body")
        print(f"Both endpoints return the same {len(listed.content):,}-byte body "
              f"({PAGE} of total={listed.json()['total']:,} rows).")

        for path in (LIST_PATH, PLAIN_PATH):
            await load(client, path, seconds=args.warmup, max_requests=args.max_requests, concurrency=args.concurrency)

        results = []
        for round_no in range(args.rounds):
            # A B, B A, A B, ...: neither endpoint always runs first, so a drift in the machine's load
            # hits both alike.
            order = (LIST_PATH, PLAIN_PATH) if round_no % 2 == 0 else (PLAIN_PATH, LIST_PATH)
            for path in order:
                result = await load(client, path, seconds=args.seconds, max_requests=args.max_requests,
                                    concurrency=args.concurrency, server_pid=server_pid)
                # CPU as a share of a core over the round
                result.update(path=path, round=round_no + 1, server_cpu=result["server_cpu"] / result["elapsed"],
                              client_cpu=result["client_cpu"] / result["elapsed"])
                results.append(result)
                print(f"  round {round_no + 1}  {path:<36} {result['requests'] / result['elapsed']:8.1f} req/s  "
                      f"(CPU: server {result['server_cpu'] * 100:.0f} %, client {result['client_cpu'] * 100:.0f} % "
                      "of a core)", flush=True)
        return results


# --------------------------------------------------------------------------- report

def summarize(results: list[dict]) -> dict[str, dict]:
    summary = {}
    for path in (LIST_PATH, PLAIN_PATH):
        runs = [r for r in results if r["path"] == path]
        latencies = sorted(x for r in runs for x in r["latencies"])
        requests = sum(r["requests"] for r in runs)
        elapsed = sum(r["elapsed"] for r in runs)
        summary[path] = {
            "requests": requests,
            "rps": requests / elapsed,
            "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000,
            "cpu": sum(r["server_cpu"] * r["elapsed"] for r in runs) / elapsed,
            "client_cpu": sum(r["client_cpu"] * r["elapsed"] for r in runs) / elapsed,
            "round_rps": [r["requests"] / r["elapsed"] for r in runs],
        }
    return summary


def print_report(summary: dict, counts: dict, args):
    listed, plain = summary[LIST_PATH], summary[PLAIN_PATH]
    table = Table(("endpoint", "<38"), ("requests", ">9,"), ("req/s", ">8.1f"), ("p50 ms", ">7.1f"),
                  ("p95 ms", ">7.1f"), ("server CPU", ">10"), ("client CPU", ">10"), ("server CPU ms/req", ">17.1f"))
    print()
    table.print_header()
    for path, s in ((LIST_PATH, listed), (PLAIN_PATH, plain)):
        table.print_row(f"GET {path}", s["requests"], s["rps"], s["p50"], s["p95"], f"{s['cpu'] * 100:.0f}%",
                        f"{s['client_cpu'] * 100:.0f}%", s["cpu"] / s["rps"] * 1000)
    round_ratios = [a / b for a, b in zip(listed["round_rps"], plain["round_rps"])]
    ratio = listed["rps"] / plain["rps"]
    print()
    print(f"ratio list/plain: {ratio:.2f}  (per round: {', '.join(f'{r:.2f}' for r in round_ratios)}; "
          f"aim >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    sizes = {n for n, _ in counts.values()}
    print("SQL queries per list request: " + ", ".join(f"limit={limit}: {n}" for limit, (n, _) in counts.items())
          + (" (constant)" if len(sizes) == 1 else " (GROWS with the page size: N+1?)"))
    database = "PostgreSQL + Redis" if args.use_pg else "SQLite + in-memory cache"
    print(f"({database}; bin/serve all with its default processes, settings_production, LOG_LEVEL="
          f"{args.log_level.upper()}; {args.rounds} interleaved rounds x {args.seconds:g} s per endpoint, concurrency "
          f"{args.concurrency}, {os.cpu_count()} CPUs; client and servers share the machine; server CPU: all "
          f"processes of bin/serve)")


def main() -> int:
    args = parse_args()
    args.use_pg = not args.sqlite and pg_available()
    env = bench_env(args)
    setup_django(env)
    logging.getLogger().setLevel(logging.WARNING)  # this process: no line per test request
    try:
        t0 = time.perf_counter()
        fresh_database(args.use_pg)
        t1 = time.perf_counter()
        _, raw_key = seed(args.rows)
        t2 = time.perf_counter()
        print(f"Database {('PostgreSQL ' + PG_DB) if args.use_pg else DB_PATH.relative_to(ROOT)}: migrated in "
              f"{t1 - t0:.1f} s, {args.rows:,} instances seeded in {t2 - t1:.1f} s.")

        counts = query_counts(raw_key)
        for limit, (n, _) in counts.items():
            print(f"SQL queries of GET /api/lablet-instances?limit={limit}: {n}")
        for sql in counts[50][1]:
            print(f"    {sql[:150]}{'…' if len(sql) > 150 else ''}")
        from django.db import connections

        connections.close_all()
        with ServeAll(env, BENCH_DIR / "list-instances-labmanager.log") as server:
            print(f"bin/serve all (pid {server.pid}) answers on {server.url}; measuring...", flush=True)
            results = asyncio.run(measure(server.url, raw_key, args, server.pid))
        print_report(summarize(results), counts, args)
        return 0
    finally:
        if args.use_pg:
            pg_drop(PG_DB)


if __name__ == "__main__":
    run(main)
