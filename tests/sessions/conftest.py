"""Fixtures of the remote-lab session tests: a worker of the default pool on the CML simulator, clients,
and helpers that speak the seed's contract."""

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from apps.sessions import shutdown
from tests.factories import placeable_worker

BASE = "/api/remote-lab"
TOPOLOGY_PATH = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "two-routers.yaml"
TOPOLOGY = TOPOLOGY_PATH.read_bytes()
OTHER_TOPOLOGY = TOPOLOGY.replace(b"two-routers", b"two-routers-b")


@pytest.fixture(autouse=True)
def _session_settings(settings, tmp_path):
    settings.SESSION_STORAGE_DIR = str(tmp_path / "session-files")
    settings.SESSION_DEFAULT_POOL = "default"
    settings.SESSION_QUEUE_MAX = 1000
    settings.SESSION_ANONYMOUS_NETWORKS = ["127.0.0.1/32", "::1/128"]
    settings.SESSION_LAB_START_TIMEOUT_SECONDS = 30
    settings.SESSION_SWEEP_INTERVAL_SECONDS = 5.0
    yield
    shutdown.reset()


@pytest.fixture
def storage_dir(settings) -> Path:
    return Path(settings.SESSION_STORAGE_DIR)


def nothing_stored(storage_dir: Path) -> bool:
    """No upload kept: the storage directory is empty or was never made (the first upload makes it), and
    either way nothing is left in it."""
    return not storage_dir.exists() or list(storage_dir.iterdir()) == []


@pytest.fixture
def worker(db, cml):
    # Not the `ec2` fixture: resetting moto costs a relaunch of the instance pool per test, and no session
    # test reads EC2 (the worker's instance exists in the simulator all the same).
    return placeable_worker(session_pool="default")


@pytest.fixture
def anon():
    """An anonymous client on loopback (APIClient's REMOTE_ADDR is 127.0.0.1)."""
    return APIClient()


@pytest.fixture
def teardowns_run_inline(monkeypatch, django_capture_on_commit_callbacks):
    """django-q2 runs dispatched tasks in this process (Q_CLUSTER sync is read at import: patch Conf)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    return django_capture_on_commit_callbacks


def create(client, **query) -> dict:
    suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
    response = client.post(f"{BASE}/session{suffix}")
    assert response.status_code == 201, response.content
    return response.json()


def status_of(client, session_id):
    return client.get(f"{BASE}/session/{session_id}")


def acquire(client, session_id, *, topology=TOPOLOGY, name="two-routers.yaml", reuse=None, extra_files=()):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"topology": SimpleUploadedFile(name, topology, content_type="application/yaml")}
    if reuse is not None:
        data["reuse"] = reuse
    if extra_files:
        data["extra_files"] = [SimpleUploadedFile(n, body) for n, body in extra_files]
    return client.post(f"{BASE}/lab", data, format="multipart", HTTP_X_SESSION_ID=str(session_id))


def lab_call(client, method: str, path: str, session_id, **kwargs):
    return getattr(client, method)(f"{BASE}{path}", HTTP_X_SESSION_ID=str(session_id), **kwargs)


def assert_problem(response, status: int, detail: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/problem+json"), response["Content-Type"]
    body = response.json()
    assert body["status"] == status and body["trace_id"]
    if detail is not None:
        assert body["detail"] == detail, body
    return body
