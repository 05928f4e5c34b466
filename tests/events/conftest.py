"""LabManager's production servers (bin/serve all) on 127.0.0.1 against the test database, and a writer in a
separate process."""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict:
    """The environment of a process that must use the test database (and the same Redis, if any)."""
    db = settings.DATABASES["default"]
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings", PYTHONPATH=str(ROOT),
               LIVE_TEST_SERVER="1")
    if db["ENGINE"] == "django.db.backends.sqlite3":
        env.pop("DATABASE_URL", None)
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return env


def stop_group(process: subprocess.Popen, *, grace: float) -> None:
    """TERM the leader of a process group (bin/serve stops its children), wait `grace` seconds, then KILL
    whatever of the group is left."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)
    process.wait(5)


class ServerUrl(str):
    """The proxy's URL (what clients use), with the app servers' own: `.web` (gunicorn), `.asgi` (daphne),
    `.log`, the file all of them write to, and `.process`, bin/serve's (the leader of their process group)."""

    web: str
    asgi: str
    log: Path
    process: subprocess.Popen


# gunicorn's own access log, one line per request with the pid of the worker process that answered it (the
# application's request log line has no pid in the development profile): pass it in server_process's
# extra_env to see which processes served (served_by). GUNICORN_CMD_ARGS adds to deploy/gunicorn.conf.py.
ACCESS_LOG_ENV = {"GUNICORN_CMD_ARGS": "--access-logfile=- --access-logformat='gunicorn-access pid=%(p)s %(m)s %(U)s %(s)s'"}
_ACCESS_LINE = re.compile(r"^gunicorn-access pid=<(\d+)> (\S+) (\S+) (\d+)$")


def served_by(url: ServerUrl, method: str, path_prefix: str, status: int, *, since: int = 0) -> list[int]:
    """The worker pid of each `method path_prefix... status` request in gunicorn's access log (ACCESS_LOG_ENV),
    from byte `since` of the log on."""
    with open(url.log, "rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return [int(m[1]) for m in map(_ACCESS_LINE.match, lines)
            if m and m[2] == method and m[3].startswith(path_prefix) and int(m[4]) == status]


def _processes_in_group(pgid: int) -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of the live processes of a process group, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def gunicorn_workers(url: ServerUrl) -> list[int]:
    """The pids of the server's gunicorn worker processes: gunicorn processes whose parent is gunicorn."""
    processes = _processes_in_group(url.process.pid)
    gunicorns = {pid for pid, (_, cmdline) in processes.items() if "gunicorn" in cmdline}
    return sorted(pid for pid in gunicorns if processes[pid][0] in gunicorns)


@contextlib.contextmanager
def server_process(extra_env: dict | None = None):
    """LabManager as production runs it, on free loopback ports: `bin/serve all` (nginx in front of gunicorn
    with several processes and daphne) against the test database. Yields its ServerUrl; stopped with TERM
    (bin/serve stops its children), then KILL of the whole process group."""
    port, web_port, asgi_port = _free_port(), _free_port(), _free_port()
    log = open(f"/tmp/live-server-{port}.log", "wb")
    run_dir = Path(f"/tmp/live-server-{port}")
    env = {**server_env(), "PORT": str(port), "WEB_PORT": str(web_port), "ASGI_PORT": str(asgi_port),
           "PROXY_RUN_DIR": str(run_dir), "PROXY_PROCESSES": "1", "STOP_GRACE": "5", **(extra_env or {})}
    process = subprocess.Popen([str(ROOT / "bin" / "serve"), "all"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.web, url.asgi, url.log = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{asgi_port}", Path(log.name)
    url.process = process
    try:
        deadline = time.monotonic() + 60
        for probe in (url.web, url.asgi, url):  # each server answers, then the proxy in front of them
            while True:
                try:
                    httpx.get(probe + "/api/diagnostics/health", timeout=2)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"bin/serve all did not start (see {log.name})") from None
                    time.sleep(0.2)
        yield url
    finally:
        stop_group(process, grace=15)
        log.close()


@contextlib.contextmanager
def qcluster_process(extra_env: dict | None = None):
    """django-q2's cluster as production runs it (`bin/serve qcluster`) against the test database: the
    tasks a server enqueues (a terminate's teardown, a collection) run. Stopped with TERM, then KILL."""
    log = open(f"/tmp/live-qcluster-{os.getpid()}-{time.monotonic_ns()}.log", "wb")
    env = {**server_env(), "Q_WORKERS": "1", **(extra_env or {})}
    process = subprocess.Popen([str(ROOT / "bin" / "serve"), "qcluster"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, grace=30)
        log.close()


KEEPALIVE_SECONDS = 1.0  # the test server's SSE keep-alive period (the default is 15 s)


@pytest.fixture(scope="module")
def daphne_url(django_db_setup, django_db_blocker):
    """One server (bin/serve all) for the module, against the test database (and REDIS_URL's Redis when set)."""
    with server_process({"LIVE_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS)}) as url:
        yield url


def write_events(resource_type: str, resource_id: str, *event_types: str) -> list[int]:
    """Write events from a separate process; returns their sequence numbers."""
    return _run_writer(resource_type, resource_id, *event_types)


def write_mixed(*events: tuple[str, str, str]) -> list[int]:
    """Write (resource_type, resource_id, event_type) events from a separate process, in order."""
    return _run_writer(*("/".join(event) for event in events))


def _run_writer(*args: str) -> list[int]:
    done = subprocess.run([sys.executable, str(ROOT / "tests/events/writer.py"), *args], cwd=ROOT, env=server_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [int(n) for n in done.stdout.split()]


class SseReader:
    """Reads `id/event/data` messages from an open httpx stream, with a bounded wait."""

    def __init__(self, response):
        self.lines = response.iter_lines()
        self.comments = []

    def next_event(self, timeout=15.0) -> dict:
        deadline = time.monotonic() + timeout
        message = {}
        for line in self.lines:
            if time.monotonic() > deadline:
                break
            if line.startswith(":"):
                self.comments.append(line)
            elif line == "":
                if "data" in message:
                    message["data"] = json.loads(message["data"])
                    message["id"] = int(message["id"])
                    return message
                message = {}
            else:
                name, _, value = line.partition(":")
                message[name] = value.lstrip(" ")
        raise AssertionError("no event in time")

    def wait_connected(self):
        for line in self.lines:
            if line.startswith(": connected"):
                return


def sse_stream(url, key=None, headers=None, **params):
    """An httpx streaming GET of /api/events/stream (API key in X-API-Key unless None)."""
    return httpx.stream("GET", url + "/api/events/stream", params=params, timeout=httpx.Timeout(20.0),
                        headers={**({"X-API-Key": key} if key else {}), **(headers or {})})
