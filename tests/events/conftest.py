"""A real daphne on 127.0.0.1 against the test database, and a writer in a separate process."""

import os
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


@pytest.fixture(scope="module")
def daphne_url(django_db_setup, django_db_blocker):
    """daphne serving labmanager.asgi on a free port; stopped (TERM, then KILL) at the end of the module."""
    port = _free_port()
    log = open(f"/tmp/live-daphne-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "labmanager.asgi:application"],
        cwd=ROOT, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/api/diagnostics/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start (see {log.name})")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def write_events(resource_type: str, resource_id: str, *event_types: str) -> list[int]:
    """Write events from a separate process; returns their sequence numbers."""
    done = subprocess.run([sys.executable, str(ROOT / "tests/events/writer.py"), resource_type, resource_id,
                           *event_types], cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [int(n) for n in done.stdout.split()]
