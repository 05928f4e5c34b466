"""Benchmark the browser consoles: concurrent console WebSockets on ONE daphne process, each sending a line
10 times a second through LabManager to a fake device console that echoes it; the keystroke round trip is
the time from a line's send to its echo's arrival on the same socket.

    .venv/bin/python -m bench.consoles [--consoles 200] [--rate 10] [--seconds 20] [--timeout 120]

The server is `bin/serve asgi` (daphne, labmanager.settings_production, the command line that serves /ws/ in
production behind nginx, which only relays the frames); the fake device is simulators/console_device.py in
its own process, listening on 8 loopback ports; the instances are RUNNING ones of 8 console ports each (the
default CONSOLE_MAX_PER_INSTANCE), their console entries pointing at the device, as the engine leaves them
(docs/consoles.md). The clients are this process (the `websockets` library), authenticated with an API key
in the subprotocol. Uses PostgreSQL (a database created and dropped here) when 127.0.0.1:5432 answers, else
SQLite. Bounded in time; always stops the server and the device. Goal: p99 under 100 ms for 200 consoles.
"""

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (BENCH_DIR, HOST, ROOT, CpuMeter, Failure, argument_parser, django_run, free_port, migrate,
                          percentile, pg_available, pg_create, pg_drop, production_env, run, spawn, stop_processes,
                          wait_tcp)

PG_DB = "labmanager_bench_consoles"
PER_INSTANCE = 8

SETUP = """
from datetime import timedelta
from django.utils import timezone
from apps.identity.services import api_key_create, user_ensure_with_role
from apps.lablets.models import ConsolePort, LabletDefinition, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.models import Worker
user, _ = user_ensure_with_role(username="bench-consoles", role="admin", actor="bench")
ports = {ports!r}
specs = [{{"name": f"console_{{n + 1}}", "device_name": "router1", "console_type": "serial"}} for n in range(len(ports))]
definition = LabletDefinition.objects.create(name="bench-consoles", version="1.0.0", cml_lab_yaml="lab: {{}}\\n",
    content_hash="0" * 64, cpu_cores=1, memory_gb=1, storage_gb=1, node_count=1, port_definitions=specs)
now = timezone.now()
for n in range({instances}):
    worker = Worker.objects.create(name=f"bench-worker-{{n}}")
    instance = LabletInstance.objects.create(definition=definition, owner_id=f"student-{{n}}", worker=worker,
        timeslot_start=now, timeslot_end=now + timedelta(hours=2), port_count=len(ports))
    for state in ("scheduled", "instantiating", "running"):
        instance = lablet_instance_transition(instance=instance, to=state, actor="bench")
    LabletInstance.objects.filter(pk=instance.pk).update(
        console=[{{**spec, "host": "127.0.0.1", "port": port}} for spec, port in zip(specs, ports)])
    ConsolePort.objects.bulk_create([ConsolePort(worker=worker, port=port, instance=instance, name=spec["name"])
                                     for spec, port in zip(specs, ports)])
    print("instance", instance.public_id)
print("key", api_key_create(user=user, actor="bench")[1])
"""


async def console(url: str, key: str, rate: float, go: asyncio.Event, window: list, ready: list, latencies: list,
                  errors: list):
    """One browser console: waits for the prompt and for every console to be open (`go`), then sends
    `<marker>\\r` every 1/rate s until window[0] and times each echo."""
    import websockets

    try:
        async with websockets.connect(url, origin=f"http://{HOST}", open_timeout=60, max_queue=None,
                                      subprotocols=["labmanager.v1", f"labmanager.bearer.{key}"]) as ws:
            seen = b""
            while b"router1>" not in seen:
                seen += await asyncio.wait_for(ws.recv(), 60)
            ready[0] += 1
            await go.wait()
            stop_at = window[0]
            sent: dict[bytes, float] = {}
            seen = b""

            async def reader():
                nonlocal seen
                async for frame in ws:
                    if isinstance(frame, str):
                        errors.append(frame)
                        return
                    now = time.perf_counter()
                    seen += frame
                    for marker in [m for m in sent if m in seen]:
                        latencies.append(now - sent.pop(marker))
                    seen = seen[-64:]

            reading = asyncio.create_task(reader())
            n = 0
            next_at = time.monotonic()
            while time.monotonic() < stop_at and not reading.done():
                n += 1
                marker = f"k{n:06d}x".encode()
                sent[marker] = time.perf_counter()
                await ws.send(marker.decode() + "\r")
                next_at += 1.0 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.sleep(0.5)  # the last echoes
            errors.extend(["lost"] * len(sent))
            reading.cancel()
    except Exception as error:  # counted, not raised: one failed console must not hide the figures
        errors.append(repr(error))


async def measure(urls, key, rate, seconds, timeout, server_pid):
    ready, latencies, errors, go, window = [0], [], [], asyncio.Event(), [0.0]
    tasks = [asyncio.create_task(console(url, key, rate, go, window, ready, latencies, errors)) for url in urls]
    started = time.monotonic()
    while ready[0] + len(errors) < len(urls) and time.monotonic() < started + timeout:  # all open (bounded)
        await asyncio.sleep(0.1)
    print(f"  {ready[0]} consoles open in {time.monotonic() - started:.1f} s")
    with CpuMeter(server_pid) as cpu:
        window[0] = time.monotonic() + seconds
        go.set()
        await asyncio.wait(tasks, timeout=seconds + timeout)
    for task in tasks:
        task.cancel()
    return ready[0], latencies, errors, cpu


def main() -> int:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--consoles", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="lines per second per console")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.consoles = max(1, min(args.consoles, 480))
    instances = -(-args.consoles // PER_INSTANCE)

    env = production_env(ALLOWED_HOSTS=HOST, DB_CONN_MAX_AGE="0")
    tmp = tempfile.TemporaryDirectory(prefix="bench-consoles-")
    use_pg = pg_available()
    print(f"Browser consoles: database {'PostgreSQL' if use_pg else 'SQLite (PostgreSQL unavailable)'}, "
          f"1 x bin/serve asgi (daphne), {args.consoles} consoles on {instances} instances, {args.rate:g} lines/s "
          f"each for {args.seconds:g} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    server, device = None, None
    try:
        if use_pg:
            env["DATABASE_URL"] = pg_create(PG_DB)
        else:
            env.pop("DATABASE_URL", None)
            env["SQLITE_PATH"] = str(Path(tmp.name) / "bench.sqlite3")
        migrate(env)
        device = subprocess.Popen([sys.executable, "-m", "simulators.console_device", str(PER_INSTANCE)], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = [int(p) for p in device.stdout.readline().split()]
        if len(ports) != PER_INSTANCE:
            raise Failure("the fake device did not start")
        lines = django_run(env, SETUP.format(ports=ports, instances=instances)).splitlines()
        ids = [line.split()[1] for line in lines if line.startswith("instance ")]
        key = [line.split()[1] for line in lines if line.startswith("key ")][-1]
        port = free_port()
        log = BENCH_DIR / "consoles-asgi.log"
        log.unlink(missing_ok=True)
        server = spawn([str(ROOT / "bin" / "serve"), "asgi"], {**env, "ASGI_BIND": f"{HOST}:{port}"}, log)
        if not wait_tcp(port, server):
            raise Failure(f"bin/serve asgi did not start (see {log})")
        urls = [f"ws://{HOST}:{port}/ws/lablet-instances/{ids[n // PER_INSTANCE]}/consoles/console_{n % PER_INSTANCE + 1}"
                for n in range(args.consoles)]
        ready, latencies, errors, cpu = asyncio.run(
            measure(urls, key, args.rate, args.seconds, args.timeout, server.pid))
        ms = [value * 1000 for value in latencies]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        print(f"  consoles open: {ready} of {args.consoles}; round trips: {len(ms)} "
              f"({len(ms) / max(args.seconds, 1):.0f}/s), errors or lost lines: {len(errors)}"
              + (f" (first: {errors[0][:120]})" if errors else ""))
        print(f"  CPU: daphne {cpu.server:.1f} s ({cpu.server / max(len(ms), 1) * 1e6:.0f} µs a round trip), "
              f"this client {cpu.client:.1f} s, in {args.seconds:g} s on {os.cpu_count()} shared CPUs")
        print(f"  keystroke round trip: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ms, default=0):.0f} ms "
              f"(goal p99 < 100 ms: {'met' if p99 < 100 and ready == args.consoles and not errors else 'NOT met'}); "
              f"load average now {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        stop_processes([server] if server else [])
        if device is not None:
            device.stdin.close()
            try:
                device.wait(10)
            except subprocess.TimeoutExpired:
                device.kill()
                device.wait(5)
        if use_pg:
            pg_drop(PG_DB)
        tmp.cleanup()


if __name__ == "__main__":
    run(main)
