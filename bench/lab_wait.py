"""Benchmark: heartbeats while 50 `POST /api/remote-lab/lab` wait on a slow CML.

Run from the repository root (`make bench`):

    .venv/bin/python -m bench.lab_wait [--labs 50] [--boot-delay 30] [--seconds 8] [--concurrency 32]

What it does:
1. Creates, migrates and (at the end) drops the PostgreSQL database lm_bench_lab_wait on 127.0.0.1:5432;
   Redis at REDIS_URL (default redis://127.0.0.1:6379/0, keys under the prefix lm-bench-lab-wait).
2. Starts the CML simulator (`python -m simulators.cml`, as bin/run.sh does) with
   `--boot-delay` seconds from a lab's start to BOOTED (default 30) and room for every lab's nodes; LabManager
   reaches it through CML_URL_OVERRIDE, CML_USERNAME and CML_PASSWORD (every worker's CML is the simulator).
3. Creates `--labs` placeable workers of the default session pool directly in the database (running, CML
   available, licence registered: what tests/factories.py::placeable_worker makes; bulk inserts, not the
   application's transitions).
4. Starts LabManager with the production command line, `bin/serve all` (nginx in front of gunicorn with its
   default processes and daphne; labmanager.settings_production), on free 127.0.0.1 ports (no q cluster:
   POST /lab does not need one). Clients are anonymous from loopback and say X-Forwarded-Proto: https.
5. Creates `--labs` sessions (POST /session), each active on its own worker (checked).
6. Measures POST /session/heartbeat of those sessions (`--concurrency` keep-alive connections: the harness's
   asyncio client and bounded load loop, bench/common.py, with bench/sessions.py's checks of every answer)
   for `--seconds`: without waiting uploads; then sends the `--labs` POST /lab (multipart,
   examples/topologies/two-routers.yaml with a distinct lab title each), waits `--settle` seconds (the
   uploads are read and the labs imported and started; they then wait for the boot) and measures again while
   all of them wait; then again after they all answered (200, with devices; checked), without waiting
   uploads. The drop is the rate with the waits against the mean of
   the two rates without. Every measuring window must end before the first lab is booted (checked).
Always stops the servers and the simulator (also on Ctrl-C or SIGTERM) and drops the database.
Goal (issue 17): the waiting uploads lower the heartbeat rate by <= 10 %.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

from bench.common import (BENCH_DIR, HOST, ROOT, Failure, ServeAll, argument_parser, migrate, pg_available, pg_create,
                          pg_drop, production_env, run, setup_django, spawn, stop_process_group)
from bench.sessions import API, Server, load

PG_DB = "lm_bench_lab_wait"
TOPOLOGY = ROOT / "examples" / "topologies" / "two-routers.yaml"
HEARTBEAT = "POST /session/heartbeat"
GOAL_DROP = 0.10
CML_USERNAME, CML_PASSWORD = "admin", "sim-password"


def parse_args():
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--labs", type=int, default=50, help="concurrent POST /lab (and sessions, workers)")
    parser.add_argument("--boot-delay", type=float, default=30.0, help="the simulator's seconds to BOOTED")
    parser.add_argument("--seconds", type=float, default=8.0, help="each heartbeat measurement")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between sending the POST /lab and measuring (uploads read, labs started)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=100_000, help="per measurement")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", metavar="URL")
    args = parser.parse_args()
    args.labs = max(1, min(args.labs, 200))
    args.seconds = min(args.seconds, 60)
    args.concurrency = max(1, min(args.concurrency, 256))
    if args.settle + args.seconds >= args.boot_delay:
        parser.error("--settle + --seconds must be shorter than --boot-delay: the labs must wait throughout")
    return args


def bench_env(redis_url: str, cml_url: str) -> dict:
    return production_env(DATABASE_URL=f"postgres://postgres@{HOST}:5432/{PG_DB}", REDIS_URL=redis_url,
                          REDIS_PREFIX="lm-bench-lab-wait", SESSION_STORAGE_DIR=str(BENCH_DIR / "lab-wait-files"),
                          SESSION_DEFAULT_POOL="default", SESSION_ANONYMOUS_NETWORKS="127.0.0.1/32,::1/128",
                          SESSION_API_RATE_LIMIT="100000/min",  # on, but far above what one address sends here
                          CML_URL_OVERRIDE=cml_url, CML_USERNAME=CML_USERNAME, CML_PASSWORD=CML_PASSWORD,
                          CML_ALLOW_HTTP="true",  # the simulator speaks plain http on loopback
                          SQLITE_PATH=None)


def start_cml(args) -> tuple[subprocess.Popen, str]:
    """The CML simulator on a free port (it picks one and prints its URL)."""
    proc = spawn([sys.executable, "-m", "simulators.cml", "--port", "0", "--print-url",
                  "--boot-delay", str(args.boot_delay), "--max-nodes", str(4 * args.labs + 20),
                  "--username", CML_USERNAME, "--password", CML_PASSWORD],
                 dict(os.environ), None, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()  # the first line; the process prints nothing else
    if not url.startswith("http://127.0.0.1:"):
        stop_process_group(proc)
        raise Failure(f"the CML simulator did not start (printed {url!r})")
    return proc, url


def create_workers(n: int) -> None:
    """`n` placeable workers of the default pool (running, CML available, licence registered)."""
    from django.utils import timezone

    from apps.workers.models import Worker, WorkerStatus

    now = timezone.now()
    Worker.objects.bulk_create([
        Worker(name=f"bench-lab-wait-{i:03d}", status=WorkerStatus.RUNNING, status_changed_at=now,
               aws_instance_id=f"i-benchwait{i:08x}", instance_type="m5zn.metal", cpu_cores=48, memory_gb=192,
               storage_gb=500, max_nodes=100, cml_service_status="available", license_status="registered",
               license_tier="enterprise", session_pool="default", ip_address=f"10.0.{i // 250}.{i % 250 + 1}")
        for i in range(n)])


def multipart(topology: bytes, filename: str) -> tuple[bytes, str]:
    boundary = "lmbench" + os.urandom(8).hex()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"topology\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/x-yaml\r\n\r\n").encode() + topology + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def create_sessions(server: Server, n: int) -> None:
    conn = server.connection()
    try:
        for _ in range(n):
            status, body = await conn.request("POST", API + "/session")
            if status != 201:
                raise Failure(f"POST /session answered {status}: {body[:300]!r}")
            server.ids.append(json.loads(body)["session_id"])
        for session_id in server.ids:
            status, body = await conn.request("GET", f"{API}/session/{session_id}")
            if status != 200 or json.loads(body)["status"] != "active":
                raise Failure(f"session {session_id} is not active ({status}: {body[:300]!r}): are the workers "
                              "placeable?")
    finally:
        conn.close()


async def post_lab(server: Server, session_id: str, n: int, timeout: float, done: list) -> None:
    """One POST /lab for `session_id` on its own connection; appends (seconds, n) when answered (200 checked)."""
    text = TOPOLOGY.read_text().replace("title: two-routers", f"title: two-routers-bench-{n:03d}", 1)
    body, content_type = multipart(text.encode(), f"two-routers-{n:03d}.yaml")
    conn = server.connection()
    started = time.perf_counter()
    try:
        status, answer = await asyncio.wait_for(
            conn.request("POST", API + "/lab", {"X-Session-ID": session_id, "Content-Type": content_type}, body),
            timeout)
    except asyncio.TimeoutError:
        raise Failure(f"POST /lab {n} did not answer within {timeout:.0f} s") from None
    finally:
        conn.close()
    if status != 200 or not json.loads(answer).get("devices"):
        raise Failure(f"POST /lab {n} answered {status}: {answer[:300]!r}")
    done.append((time.perf_counter() - started, n))


async def heartbeats(server: Server, args, label: str) -> dict:
    connections = [server.connection() for _ in range(args.concurrency)]
    try:
        result = await load(server, connections, HEARTBEAT, seconds=args.seconds, max_requests=args.max_requests,
                            cpu=True)
    finally:
        for conn in connections:
            conn.close()
    result["rps"] = result["requests"] / result["elapsed"]
    print(f"  {label:<32} {result['rps']:8.1f} heartbeats/s  ({result['requests']:,} in {result['elapsed']:.1f} s; "
          f"server CPU {result['server_cpu'] / result['requests'] * 1000:.2f} ms a request, "
          f"{result['server_cpu'] / result['elapsed'] * 100:.0f} % of a core)", flush=True)
    return result


async def measure(server: Server, args) -> dict:
    await create_sessions(server, args.labs)
    print(f"{args.labs} sessions, each active on its own worker. Heartbeats at c={args.concurrency}:", flush=True)
    warm = [server.connection() for _ in range(args.concurrency)]
    try:
        await load(server, warm, HEARTBEAT, seconds=1.0, max_requests=args.max_requests)  # warm-up
    finally:
        for conn in warm:
            conn.close()
    before = await heartbeats(server, args, "without waiting uploads (before)")
    done: list = []
    sent = time.perf_counter()
    timeout = args.boot_delay + 180
    uploads = [asyncio.ensure_future(post_lab(server, sid, n, timeout, done)) for n, sid in enumerate(server.ids)]
    try:
        await asyncio.sleep(args.settle)
        if done or any(task.done() for task in uploads):
            failed = [task for task in uploads if task.done() and task.exception()]
            if failed:
                raise failed[0].exception()
            raise Failure(f"{len(done)} POST /lab answered within {args.settle:g} s: the CML did not make them wait")
        during = await heartbeats(server, args, f"with {args.labs} POST /lab waiting")
        during["waiting_at_end"] = args.labs - len(done)
        if done:
            raise Failure(f"{len(done)} POST /lab answered during the measurement: lengthen --boot-delay")
        await asyncio.gather(*uploads)
    finally:
        for task in uploads:
            task.cancel()
        await asyncio.gather(*uploads, return_exceptions=True)
    waits = sorted(seconds for seconds, _ in done)
    print(f"  all {len(done)} POST /lab answered 200 with devices, {waits[0]:.1f}-{waits[-1]:.1f} s after they were "
          f"sent ({time.perf_counter() - sent:.1f} s for all)", flush=True)
    after = await heartbeats(server, args, "without waiting uploads (after)")
    return {"before": before, "during": during, "after": after, "waits": waits}


def main() -> int:
    args = parse_args()
    if not pg_available():
        print("PostgreSQL does not answer on 127.0.0.1:5432: this benchmark needs it (and Redis).", file=sys.stderr)
        return 1
    cml_proc, created = None, False
    try:
        cml_proc, cml_url = start_cml(args)
        env = bench_env(args.redis, cml_url)
        pg_create(PG_DB)
        created = True
        migrate(env)
        setup_django(env)
        create_workers(args.labs)
        from django.db import connections

        connections.close_all()
        print(f"Database: PostgreSQL {PG_DB}; Redis {args.redis}; CML simulator on {cml_url} (boot delay "
              f"{args.boot_delay:g} s); {args.labs} placeable workers in the pool 'default'.", flush=True)
        with ServeAll(env, BENCH_DIR / "lab-wait-labmanager.log") as ours:
            server = Server("labmanager", ours.port, ours.pid, API, {"X-Forwarded-Proto": "https"})
            print(f"bin/serve all (pid {ours.pid}) on {ours.url}", flush=True)
            result = asyncio.run(measure(server, args))
        without = (result["before"]["rps"] + result["after"]["rps"]) / 2
        drop = 1 - result["during"]["rps"] / without
        print()
        print(f"heartbeats/s without waiting uploads: {without:.1f} (before {result['before']['rps']:.1f}, after "
              f"{result['after']['rps']:.1f}); with {args.labs} POST /lab waiting on CML: "
              f"{result['during']['rps']:.1f}")
        print(f"drop: {drop * 100:.1f} %  (goal <= {GOAL_DROP * 100:.0f} %: {'met' if drop <= GOAL_DROP else 'NOT met'})")
        print(f"(PostgreSQL + Redis; bin/serve all with its default processes, settings_production; {args.seconds:g} s "
              f"per measurement, {args.concurrency} concurrent keep-alive clients on {args.labs} active sessions; "
              f"CML simulator boot delay {args.boot_delay:g} s; {os.cpu_count()} CPUs shared by client, servers, "
              f"simulator, PostgreSQL and Redis)")
        return 0
    finally:
        stop_process_group(cml_proc, timeout=10)
        if created:
            pg_drop(PG_DB)


if __name__ == "__main__":
    run(main)
