"""Benchmark the live fan-out: SSE subscribers on two stream servers with Redis, events written by a
separate process, latency from the event's journal timestamp (set just before its commit) to receipt.

    .venv/bin/python bench/sse.py [--subscribers 1000] [--events 50] [--rate 10] [--timeout 120]

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

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py
from common import free_port, pg_admin, pg_available, stop_process_group, tree_cpu_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "bench"
PY = sys.executable
PG_DB = "labmanager_bench_sse"


def django_run(env: dict, code: str, timeout=300) -> str:
    done = subprocess.run([PY, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout


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
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
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
    cpu_before = [tree_cpu_seconds(pid) for pid in server_pids]
    writer = await asyncio.create_subprocess_exec(PY, "-c", "import django; django.setup()\n" +
                                                  WRITER.format(events=events, pause=pause),
                                                  cwd=ROOT, env=os.environ.copy())
    await asyncio.wait_for(writer.wait(), timeout)
    expected = counter[0] * events
    deadline = time.monotonic() + 10
    while len(latencies) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    server_cpu = [tree_cpu_seconds(pid) - before for pid, before in zip(server_pids, cpu_before)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counter[0], connect_s, expected, latencies, server_cpu


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second written")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.subscribers = min(args.subscribers, 5000)
    args.events = min(args.events, 1000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally block stops the servers

    env = dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings_production", PYTHONPATH=str(ROOT),
               SECRET_KEY="bench-" + "x" * 50, ALLOWED_HOSTS="127.0.0.1",
               REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"), REDIS_PREFIX="lm-bench-sse",
               DB_CONN_MAX_AGE="0")
    env.pop("ROOT_URLCONF", None)
    tmp = tempfile.TemporaryDirectory(prefix="bench-sse-")
    use_pg = pg_available()
    if use_pg:
        pg_admin(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        pg_admin(f'CREATE DATABASE "{PG_DB}"')
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
    else:
        env.pop("DATABASE_URL", None)
        env["SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
    print(f"SSE fan-out: database {'PostgreSQL' if use_pg else 'SQLite (PostgreSQL unavailable)'}, "
          f"Redis {env['REDIS_URL']}, 2 x bin/serve asgi (daphne), {args.subscribers} subscribers, "
          f"{args.events} events at {args.rate}/s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    servers = []
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=600)
        key = django_run(env, "from apps.identity.services import api_key_create, user_ensure_with_role\n"
                         "u, _ = user_ensure_with_role(username='bench-sse', role='admin', actor='bench')\n"
                         "print(api_key_create(user=u, actor='bench')[1])").strip().splitlines()[-1]
        ports = [free_port(), free_port()]
        LOGS.mkdir(parents=True, exist_ok=True)
        for n, port in enumerate(ports):
            with open(LOGS / f"sse-asgi-{n + 1}.log", "wb") as log:
                servers.append(subprocess.Popen([str(ROOT / "bin" / "serve"), "asgi"], cwd=ROOT,
                                                env={**env, "ASGI_BIND": f"127.0.0.1:{port}"}, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True))
        for server, port in zip(servers, ports):
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"bin/serve asgi did not start (see {LOGS}/sse-asgi-*.log)")
                    time.sleep(0.2)
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
    finally:
        for server in servers:
            if server.poll() is None:
                server.terminate()  # both stop at once; stop_process_group then waits for each
        for server in servers:
            stop_process_group(server)
        if use_pg:
            pg_admin(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        tmp.cleanup()


if __name__ == "__main__":
    main()
