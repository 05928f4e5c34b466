"""Soak: the production command lines, `bin/serve all` (nginx, gunicorn, daphne) and `bin/serve qcluster`,
production profile, on PostgreSQL + Redis, under a mixed load for --minutes; reports the error rate (goal:
zero 5xx), latency percentiles per kind of request, memory (RSS) per server over time (goal: flat after
warm-up) and whether the audit chain verifies after.

Run from the repository root (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379 must answer):

    .venv/bin/python -m bench.soak [--minutes 10] [--readers 4] [--writers 2] [--sessions 4] [--sse 10]

What it does:
1. Creates the database lm_bench_soak (dropped at the end) and empties Redis db --redis-db (default 10);
   starts the EC2 (moto) and CML simulators on 127.0.0.1, migrates, seeds the demo data, syncs the
   workers, sets up the schedules, creates an admin API key.
2. Starts `bin/serve qcluster` (the q cluster: its schedules run the lifecycle tick, EC2 sync, CML health,
   the session reaper, webhooks every minute) and `bin/serve all` (bench/common.py ServeAll: nginx on a free
   127.0.0.1 port in front of gunicorn with its default processes and threads and of daphne, each on a free
   port), with labmanager.settings_production (JSON logs to var/bench/soak-*.log; SECURE_SSL_REDIRECT off:
   the client speaks plain HTTP on loopback).
3. Load, all on nginx's one address (it routes by path: the SSE streams to daphne, the rest to gunicorn),
   each client paced (not flat out: a soak, not a throughput test):
   readers GET workers / lablet-instances / lablet-definitions / audit events; writers POST a lablet
   instance (tomorrow's slot, a fresh owner) then terminate it; session clients open a remote-lab session,
   heartbeat every 2 s for 20 s, read it, end it; SSE subscribers hold /api/events/stream open and count
   events (reconnecting if cut).
4. Samples RSS every 15 s per server, each with its whole process tree: nginx (master and workers),
   gunicorn (arbiter and workers), daphne, the q cluster.
5. Stops the load, runs `verify_audit`, prints the figures, stops every process, drops the database.
"""

import asyncio
import contextlib
import random
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from bench.common import (BENCH_DIR, HOST, ROOT, Failure, ServeAll, Table, argument_parser, free_port, migrate,
                          percentile, pg_create, pg_drop, production_env, run, spawn, stop_processes, wait_http)

DB_NAME = "lm_bench_soak"


class Processes:
    """Every process started here (bench.common spawn, output to var/bench/soak-NAME.log); all stopped by
    stop_all."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        log = BENCH_DIR / f"soak-{name}.log"
        log.unlink(missing_ok=True)
        self.procs[name] = spawn(args, env, log)
        return self.procs[name]

    def stop_all(self) -> None:
        stop_processes(self.procs.values())


def serve_parts(pid: int) -> dict[str, int]:
    """The servers `bin/serve all` (pid) started, by name: its children (gunicorn's arbiter, daphne, nginx's
    master), each measured with its process tree."""
    parts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                name = next((n for n in ("gunicorn", "daphne", "nginx") if n in cmdline), f"pid-{child}")
                parts[name] = int(child)
    return parts


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def rss_kib(pid: int) -> int:
    """RSS of a process and its descendants, KiB (Linux /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total


class Stats:
    def __init__(self):
        self.latencies: dict[str, list[float]] = {}
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.sse_events = 0
        self.sse_connects = 0

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.errors.append(f"{kind}: {status}")

    def total(self) -> int:
        return sum(self.statuses.values())


async def call(client: httpx.AsyncClient, stats: Stats, kind: str, method: str, url: str, **kwargs):
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        stats.record(kind, 599, time.perf_counter() - started)  # a transport error counts as a server error
        stats.errors[-1] = f"{kind}: {type(exc).__name__}: {exc}"
        return None
    stats.record(kind, response.status_code, time.perf_counter() - started)
    return response


async def reader(server, key, stats, deadline, pause):
    paths = ["/api/workers", "/api/lablet-instances?limit=20", "/api/lablet-definitions", "/api/audit/events?limit=20"]
    async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=30) as client:
        i = 0
        while time.monotonic() < deadline:
            path = paths[i % len(paths)]
            await call(client, stats, "read " + path.split("?")[0], "GET", server + path)
            i += 1
            await asyncio.sleep(pause)


async def writer(server, key, definitions, stats, deadline, pause, n):
    async with httpx.AsyncClient(headers={"X-API-Key": key}, timeout=30) as client:
        i = 0
        while time.monotonic() < deadline:
            start = (datetime.now(timezone.utc) + timedelta(days=1, hours=random.randint(0, 20))).replace(
                minute=0, second=0, microsecond=0)
            body = {"definition_id": random.choice(definitions), "owner_id": f"soak-{n}-{i}",
                    "timeslot_start": start.isoformat(), "timeslot_end": (start + timedelta(hours=1)).isoformat()}
            created = await call(client, stats, "write create instance", "POST",
                                 server + "/api/lablet-instances", json=body)
            if created is not None and created.status_code == 201:
                instance = created.json()["id"]
                await call(client, stats, "write terminate instance", "POST",
                           server + f"/api/lablet-instances/{instance}/terminate")
            i += 1
            await asyncio.sleep(pause)


async def session_client(server, stats, deadline):
    async with httpx.AsyncClient(timeout=30) as client:
        i = 0
        while time.monotonic() < deadline:
            base = server + "/api/remote-lab"
            created = await call(client, stats, "session create", "POST", base + "/session")
            if created is None or created.status_code != 201:
                await asyncio.sleep(1)
                i += 1
                continue
            session_id = created.json()["session_id"]
            for beat in range(10):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(2)
                await call(client, stats, "session heartbeat", "POST", base + "/session/heartbeat",
                           headers={"X-Session-ID": session_id})
                await call(client, stats, "session read", "GET", base + f"/session/{session_id}")
            await call(client, stats, "session end", "DELETE", base + f"/session/{session_id}")
            i += 1


async def sse_subscriber(server, key, stats, deadline):
    while time.monotonic() < deadline:
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
                async with client.stream("GET", server + "/api/events/stream", headers={"X-API-Key": key}) as response:
                    if response.status_code != 200:
                        stats.record("sse connect", response.status_code, 0)
                        await asyncio.sleep(1)
                        continue
                    stats.sse_connects += 1
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            stats.sse_events += 1
                        if time.monotonic() >= deadline:
                            return
        except httpx.HTTPError as exc:
            if time.monotonic() < deadline:
                stats.errors.append(f"sse: {type(exc).__name__}: {exc}")
                await asyncio.sleep(1)


async def memory_sampler(pids: dict[str, int], samples: list, deadline, started):
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - started, {name: rss_kib(pid) for name, pid in pids.items()}))
        await asyncio.sleep(min(15, max(0.1, deadline - time.monotonic())))
    samples.append((time.monotonic() - started, {name: rss_kib(pid) for name, pid in pids.items()}))


async def load(args, server, key, definitions, pids, stats, samples):
    started = time.monotonic()
    deadline = started + args.minutes * 60
    tasks = [memory_sampler(pids, samples, deadline, started)]
    tasks += [reader(server, key, stats, deadline, 0.1) for _ in range(args.readers)]
    tasks += [writer(server, key, definitions, stats, deadline, 0.5, n) for n in range(args.writers)]
    tasks += [session_client(server, stats, deadline) for _ in range(args.sessions)]
    tasks += [sse_subscriber(server, key, stats, deadline) for _ in range(args.sse)]
    await asyncio.gather(*tasks)
    return time.monotonic() - started


def report(args, stats, samples, elapsed, verify_output):
    print(f"\nSoak: {args.minutes} min, bin/serve all (nginx, gunicorn, daphne) + bin/serve qcluster, "
          "PostgreSQL + Redis, production profile")
    total = stats.total()
    server_errors = sum(n for status, n in stats.statuses.items() if status >= 500)
    print(f"requests: {total:,} in {elapsed:.0f} s ({total / elapsed:.1f}/s); statuses: "
          + ", ".join(f"{s}: {n:,}" for s, n in sorted(stats.statuses.items())))
    print(f"5xx and transport errors: {server_errors} ({100 * server_errors / max(total, 1):.3f} %)")
    for error in stats.errors[:10]:
        print("   ", error)
    print(f"SSE: {stats.sse_connects} connections, {stats.sse_events:,} events received")
    table = Table(("request", "<34"), ("count", ">8,"), ("p50 ms", ">8.1f"), ("p99 ms", ">8.1f"), ("max ms", ">8.1f"))
    table.print_header()
    everything = []
    for kind, values in sorted(stats.latencies.items()):
        everything += values
        table.print_row(kind, len(values), percentile(values, 50) * 1000, percentile(values, 99) * 1000,
                        max(values) * 1000)
    if everything:
        table.print_row("all", len(everything), percentile(everything, 50) * 1000,
                        percentile(everything, 99) * 1000, max(everything) * 1000)
    warm = next((s for s in samples if s[0] >= elapsed * 0.2), samples[0])
    last = samples[-1]
    print(f"RSS MiB (after warm-up at {warm[0]:.0f} s -> end at {last[0]:.0f} s):")
    for name in last[1]:
        series = " ".join(f"{s[1][name] / 1024:.0f}" for s in samples)
        print(f"  {name:<12} {warm[1][name] / 1024:7.1f} -> {last[1][name] / 1024:7.1f}  "
              f"({(last[1][name] - warm[1][name]) / 1024:+.1f})   samples: {series}")
    print("audit:", verify_output.strip().splitlines()[-1] if verify_output.strip() else "(no output)")


def main() -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--sse", type=int, default=10)
    parser.add_argument("--redis-db", type=int, default=10)
    args = parser.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)

    import redis

    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((HOST, port)):
                print(f"bench.soak: skipped, it needs {name} on {HOST}:{port}")
                return 0

    redis.Redis(host=HOST, port=6379, db=args.redis_db).flushdb()
    procs = Processes()
    try:
        ec2_port, cml_port = free_port(), free_port()
        env = production_env(
            SECRET_KEY="soak-benchmark-only-key-" + "x" * 40,
            ALLOWED_HOSTS=f"{HOST},localhost",
            SECURE_SSL_REDIRECT="false",
            DATABASE_URL=pg_create(DB_NAME),
            REDIS_URL=f"redis://{HOST}:6379/{args.redis_db}",
            STATIC_ROOT=str(BENCH_DIR / "soak-static"),
            LOG_LEVEL="WARNING",
            API_RATE_LIMIT="1000000/min", API_RATE_BURST="100000", SESSION_API_RATE_LIMIT="1000000/min",
            AWS_ENDPOINT_URL=f"http://{HOST}:{ec2_port}", AWS_ACCESS_KEY_ID="simulated",
            AWS_SECRET_ACCESS_KEY="simulated", WORKER_AMI_ID="ami-12c6146b",
            CML_URL_OVERRIDE=f"http://{HOST}:{cml_port}", CML_USERNAME="admin", CML_PASSWORD="sim-password",
            CML_ALLOW_HTTP="true",  # the simulator speaks plain http on loopback
            WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        )
        ec2 = procs.start("ec2-sim", [sys.executable, "-m", "simulators.ec2", "--port", str(ec2_port)], env)
        cml = procs.start("cml-sim", [sys.executable, "-m", "simulators.cml", "--port", str(cml_port),
                                      "--boot-delay", "1"], env)
        for port, path, proc in ((ec2_port, "/moto-api/", ec2), (cml_port, "/api/v0/system_information", cml)):
            if not wait_http(port, path, proc):
                raise Failure(f"the simulator on port {port} did not answer (see {BENCH_DIR}/soak-*-sim.log)")
        print("setting up (migrate, seed, sync)...", flush=True)
        migrate(env)
        manage(env, "seed_demo", "--force")  # a throw-away database with DEBUG off
        manage(env, "sync_workers")
        manage(env, "setup_schedules")
        key = manage(env, "create_api_key", "--user", "soak-admin", "--role", "admin").strip()

        qcluster = procs.start("qcluster", [str(ROOT / "bin" / "serve"), "qcluster"], env)
        (BENCH_DIR / "soak-serve.log").write_bytes(b"")
        with ServeAll(env, BENCH_DIR / "soak-serve.log") as serve:
            server = serve.url
            definitions = [d["id"] for d in httpx.get(server + "/api/lablet-definitions", headers={"X-API-Key": key},
                                                      timeout=10).json()["lablet_definitions"] if d["is_active"]]
            pids = {**serve_parts(serve.pid), "qcluster": qcluster.pid}
            print(f"load for {args.minutes} min on {server} (bin/serve all: {', '.join(list(pids)[:-1])}; "
                  f"{len(definitions)} definitions)...", flush=True)
            stats, samples = Stats(), []
            elapsed = asyncio.run(load(args, server, key, definitions, pids, stats, samples))
        verify = subprocess.run([sys.executable, "manage.py", "verify_audit", "--no-record"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        report(args, stats, samples, elapsed, verify.stdout + verify.stderr)
        if verify.returncode:
            print("AUDIT CHAIN DID NOT VERIFY", file=sys.stderr)
            return 1
        return 0
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            pg_drop(DB_NAME)


if __name__ == "__main__":
    run(main)
