"""Benchmark: `GET /api/lablet-instances?limit=50` with 10,000 instances, beside a plain DRF view.

Run from the repository root (`make bench`):

    .venv/bin/python bench/list_instances.py [--rows 10000] [--seconds 10] [--rounds 3] [--concurrency 8]

What it does:
1. Creates a fresh SQLite database under var/bench/, migrates it, and seeds `--rows` lablet instances
   over a few definitions and workers, in every state (about 10 % terminated, which the default list
   hides). Seeding uses `bulk_create` and writes `status` and the state timestamps directly: that is
   fine for a benchmark (it measures reads), but it is not how the application changes states.
2. Creates an admin user (admins see every instance) and an API key.
3. Counts the SQL queries of one list request in-process (Django test client, same database), at
   several page sizes, to show the count does not grow with the rows.
4. Starts daphne on 127.0.0.1 (a free port) with ROOT_URLCONF=bench.urls, which adds the baseline
   `/api/bench/plain` (see bench/urls.py): the same 50 objects, same auth, throttle and renderer,
   served from memory.
5. Measures both endpoints in interleaved rounds (A B, B A, A B, ...), each round a bounded async
   httpx load loop (at most `--seconds` long and at most `--max-requests` requests), checks every
   response (200 and 50 rows), and prints requests, req/s, p50/p95 latency and the ratio list/plain.
6. Always stops daphne (also on Ctrl-C or SIGTERM).
"""

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from common import cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
DB_PATH = BENCH_DIR / "bench.sqlite3"
HOST = "127.0.0.1"
LIST_PATH = "/api/lablet-instances?limit=50"
PLAIN_PATH = "/api/bench/plain"
PAGE = 50

# The server and this process read the same settings from the environment.
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "labmanager.settings",
    "SQLITE_PATH": str(DB_PATH),
    "ROOT_URLCONF": "bench.urls",
    # Effectively unlimited, but per second: DRF's throttle keeps one timestamp per request of the
    # window in the cache and (un)pickles the list on every request, so with a per-minute window this
    # high the list would grow through the run (~6,000 entries, ~0.3 ms a request, at 100 req/s). Per
    # second it stays shorter than in production (up to 1,000 entries at the default 1000/min).
    "API_RATE_LIMIT": "10000000/s",
    "DEBUG": "false",
    "LOG_LEVEL": "WARNING",
    "ALLOWED_HOSTS": HOST,
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="lablet instances to seed (default 10000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one measured round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per endpoint, interleaved (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint first (default 2)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per round")
    args = parser.parse_args()
    if args.rows < 100:
        parser.error("--rows must be at least 100 (the page has 50 rows that are not terminated)")
    return args


# --------------------------------------------------------------------------- database

def setup_django():
    os.environ.update(BENCH_ENV)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fresh_database():
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
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
    from labmanager.services import api_key_create, user_ensure_with_role

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
    client.get(LIST_PATH)  # warm-up: the first request of a key also stamps last_used_at
    counts = {}
    for limit in (10, 50, 200):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"/api/lablet-instances?limit={limit}")
        assert response.status_code == 200, response.content[:500]
        assert len(response.json()["lablet_instances"]) == limit
        counts[limit] = (len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries])
    connection.close()
    return counts


# --------------------------------------------------------------------------- server

def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, **BENCH_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        # -v 0: no access log line per request (bin/run.sh keeps it; it costs both endpoints alike).
        [str(ROOT / ".venv" / "bin" / "daphne"), "-v", "0", "-b", HOST, "-p", str(port), "labmanager.asgi:application"],
        cwd=ROOT, env=env, start_new_session=True,  # its own group: Ctrl-C reaches us, we stop it
    )


def stop_server(proc: subprocess.Popen | None):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 30.0):
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with code {proc.returncode} before answering")
        try:
            if httpx.get(f"{base}/api/diagnostics/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"daphne did not answer /api/diagnostics/health within {timeout:.0f} s")


# --------------------------------------------------------------------------- load

class Failure(Exception):
    pass


async def load(client, path: str, *, seconds: float, max_requests: int, concurrency: int) -> dict:
    """Keep `concurrency` requests in flight for at most `seconds` and at most `max_requests` requests."""
    latencies: list[float] = []
    issued = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise Failure(f"GET {path} answered {response.status_code}: {response.text[:300]}")
            rows = response.json().get("lablet_instances")
            if not isinstance(rows, list) or len(rows) != PAGE:
                raise Failure(f"GET {path} returned {len(rows) if isinstance(rows, list) else rows!r} rows, not {PAGE}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "elapsed": elapsed, "latencies": latencies}


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def measure(base: str, raw_key: str, args, server_pid: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": raw_key}, limits=limits,
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
                cpu0, client0 = cpu_seconds(server_pid), time.process_time()
                result = await load(client, path, seconds=args.seconds, max_requests=args.max_requests,
                                    concurrency=args.concurrency)
                result.update(path=path, round=round_no + 1,
                              server_cpu=(cpu_seconds(server_pid) - cpu0) / result["elapsed"],
                              client_cpu=(time.process_time() - client0) / result["elapsed"])
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
    print()
    print(f"{'endpoint':<38} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'server CPU':>10} "
          f"{'client CPU':>10} {'server CPU ms/req':>17}")
    for path, s in ((LIST_PATH, listed), (PLAIN_PATH, plain)):
        print(f"GET {path:<34} {s['requests']:>9,} {s['rps']:>8.1f} {s['p50']:>7.1f} {s['p95']:>7.1f} "
              f"{s['cpu'] * 100:>9.0f}% {s['client_cpu'] * 100:>9.0f}% {s['cpu'] / s['rps'] * 1000:>17.1f}")
    round_ratios = [a / b for a, b in zip(listed["round_rps"], plain["round_rps"])]
    ratio = listed["rps"] / plain["rps"]
    print()
    print(f"ratio list/plain: {ratio:.2f}  (per round: {', '.join(f'{r:.2f}' for r in round_ratios)}; "
          f"aim >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    sizes = {n for n, _ in counts.values()}
    print("SQL queries per list request: " + ", ".join(f"limit={limit}: {n}" for limit, (n, _) in counts.items())
          + (" (constant)" if len(sizes) == 1 else " (GROWS with the page size: N+1?)"))
    print(f"({args.rounds} interleaved rounds x {args.seconds:g} s per endpoint, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs; client and server share the machine)")


def main() -> int:
    args = parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored

    setup_django()
    t0 = time.perf_counter()
    fresh_database()
    t1 = time.perf_counter()
    _, raw_key = seed(args.rows)
    t2 = time.perf_counter()
    print(f"Database {DB_PATH.relative_to(ROOT)}: migrated in {t1 - t0:.1f} s, "
          f"{args.rows:,} instances seeded in {t2 - t1:.1f} s.")

    counts = query_counts(raw_key)
    for limit, (n, _) in counts.items():
        print(f"SQL queries of GET /api/lablet-instances?limit={limit}: {n}")
    for sql in counts[50][1]:
        print(f"    {sql[:150]}{'…' if len(sql) > 150 else ''}")

    proc = None
    try:
        for _attempt in range(3):  # the free port may be taken between the probe and daphne's bind
            port = free_port()
            base = f"http://{HOST}:{port}"
            proc = start_server(port)
            try:
                wait_healthy(base, proc)
                break
            except RuntimeError:
                if proc.poll() is None:
                    raise
        else:
            raise RuntimeError("daphne could not start")
        print(f"daphne (pid {proc.pid}) answers on {base}; measuring...", flush=True)
        results = asyncio.run(measure(base, raw_key, args, proc.pid))
        print_report(summarize(results), counts, args)
        return 0
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    finally:
        stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
