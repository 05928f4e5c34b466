"""Benchmark the live fan-out: SSE subscribers on two stream servers with Redis, events written by a
separate process, latency from the event's journal timestamp (set just before its commit) to receipt.

    .venv/bin/python -m bench.sse [--subscribers 1000] [--events 50] [--rate 10] [--timeout 120]

The stream servers are two `bin/serve asgi` processes (ASGI_BIND on free 127.0.0.1 ports): the daphne
command line that serves /api/events/stream in production, with labmanager.settings_production; the
subscribers are split over the two and connect to them directly, saying X-Forwarded-Proto: https as the
proxy in front would. Why not through nginx (`bin/serve all`): what is measured is the application's
fan-out across processes (commit, Redis group message to every daphne, each one's journal tail, its write
to each open stream). One `bin/serve all` has a single daphne behind its nginx, so it would not show the
cross-process path; two of them would add two nginx and two idle gunicorns on the same 2 cores. nginx only
relays the stream's bytes (proxy_buffering off for this path); its hop is not in these figures.

Uses PostgreSQL (a database created and dropped here) when 127.0.0.1:5432 answers, else SQLite; Redis
redis://127.0.0.1:6379/11 (REDIS_URL overrides). Bounded in count and time; always stops both servers.
Goal: p99 under 500 ms for 1,000 subscribers.
"""

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (BENCH_DIR, HOST, ROOT, CpuMeter, Failure, argument_parser, django_run, free_port, migrate,
                          percentile, pg_available, pg_create, pg_drop, production_env, run, spawn, stop_processes,
                          wait_tcp)

PG_DB = "labmanager_bench_sse"


WRITER = """
import time
from django.db import transaction
from apps.audit.services import audit_record
for n in range({events}):
    with transaction.atomic():
        audit_record(event_type="worker.running", actor="system", resource_type="worker",
                     resource_id="wrk-bench", action="worker.bench", metadata={{"n": n}})
    time.sleep({pause})
"""


STAMP = b'"timestamp":"'


async def subscriber(port: int, key: str, connected: asyncio.Event, counter: list, total: int,
                     latencies: list, done: asyncio.Event):
    """One SSE client. Reads whatever has arrived and looks only for the `timestamp` of each data line
    (no JSON decoding: with a thousand clients in one process, the client's own CPU would be measured)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET /api/events/stream HTTP/1.1\r\nHost: {HOST}\r\nX-API-Key: {key}\r\n"
                 "X-Forwarded-Proto: https\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    pending = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            received = time.time()
            pending += data
            complete, _, pending = pending.rpartition(b"\n")
            for line in complete.split(b"\n"):
                if line.startswith(b"data: "):
                    at = line.find(STAMP) + len(STAMP)
                    latencies.append(received - _parse(line[at:line.index(b'"', at)].decode()))
                elif line.startswith(b": connected"):
                    counter[0] += 1
                    if counter[0] == total:
                        connected.set()
    finally:
        writer.close()


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def measure(ports, key, subscribers, events, pause, timeout, server_pids=()):
    connected, done = asyncio.Event(), asyncio.Event()
    counter, latencies = [0], []
    tasks = [asyncio.create_task(subscriber(ports[i % len(ports)], key, connected, counter, subscribers,
                                            latencies, done)) for i in range(subscribers)]
    started = time.monotonic()
    try:
        await asyncio.wait_for(connected.wait(), timeout)
    except TimeoutError:
        print(f"only {counter[0]} of {subscribers} subscribers connected in {timeout} s")
    connect_s = time.monotonic() - started
    with CpuMeter(*server_pids) as cpu:
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", "import django; django.setup()\n" +
                                                      WRITER.format(events=events, pause=pause),
                                                      cwd=ROOT, env=os.environ.copy())
        await asyncio.wait_for(writer.wait(), timeout)
        expected = counter[0] * events
        deadline = time.monotonic() + 10  # bounded: the deliveries still on their way
        while len(latencies) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    server_cpu = cpu.servers
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counter[0], connect_s, expected, latencies, server_cpu


def main() -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second written")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.subscribers = min(args.subscribers, 5000)
    args.events = min(args.events, 1000)

    env = production_env(ALLOWED_HOSTS=HOST, REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"),
                         REDIS_PREFIX="lm-bench-sse", DB_CONN_MAX_AGE="0")
    tmp = tempfile.TemporaryDirectory(prefix="bench-sse-")
    use_pg = pg_available()
    print(f"SSE fan-out: database {'PostgreSQL' if use_pg else 'SQLite (PostgreSQL unavailable)'}, "
          f"Redis {env['REDIS_URL']}, 2 x bin/serve asgi (daphne), {args.subscribers} subscribers, "
          f"{args.events} events at {args.rate}/s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    servers = []
    try:
        if use_pg:
            env["DATABASE_URL"] = pg_create(PG_DB)
        else:
            env.pop("DATABASE_URL", None)
            env["SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
        migrate(env)
        key = django_run(env, "from apps.identity.services import api_key_create, user_ensure_with_role\n"
                         "u, _ = user_ensure_with_role(username='bench-sse', role='admin', actor='bench')\n"
                         "print(api_key_create(user=u, actor='bench')[1])").strip().splitlines()[-1]
        ports = [free_port(), free_port()]
        for n, port in enumerate(ports):
            log = BENCH_DIR / f"sse-asgi-{n + 1}.log"
            log.unlink(missing_ok=True)
            servers.append(spawn([str(ROOT / "bin" / "serve"), "asgi"], {**env, "ASGI_BIND": f"{HOST}:{port}"}, log))
        for server, port in zip(servers, ports):
            if not wait_tcp(port, server):
                raise Failure(f"bin/serve asgi did not start (see {BENCH_DIR}/sse-asgi-*.log)")
        os.environ.update(env)
        connected, connect_s, expected, latencies, server_cpu = asyncio.run(
            measure(ports, key, args.subscribers, args.events, 1.0 / args.rate, args.timeout,
                    [server.pid for server in servers]))
        print(f"  subscribers connected: {connected} in {connect_s:.1f} s")
        print(f"  deliveries: {len(latencies)} of {expected} expected; the two servers used "
              f"{' + '.join(f'{c:.1f}' for c in server_cpu)} s of CPU for them "
              f"({sum(server_cpu) / max(len(latencies), 1) * 1e6:.0f} µs a delivery)")
        ms = [value * 1000 for value in latencies]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        print(f"  commit->delivery latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(ms, default=0):.0f} ms "
              f"(goal p99 < 500 ms: {'met' if p99 < 500 and len(latencies) == expected else 'NOT met'}); "
              f"load average now {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        stop_processes(servers)  # both stop at once
        if use_pg:
            pg_drop(PG_DB)
        tmp.cleanup()


if __name__ == "__main__":
    run(main)
