"""RemoteLabClient against the real remote-lab API (apps/sessions) served by the production servers (bin/serve
all: nginx, gunicorn, daphne), with a worker of the default session pool whose CML is the simulator."""

import time
from pathlib import Path

import pytest

from apps.sessions.models import LabStatus, Session, SessionLab, SessionStatus
from labmanager_remote_lab import RemoteLabClient, SessionNotFound
from tests.daphne import remote_lab_server
from tests.factories import placeable_worker

TOPOLOGY = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "two-routers.yaml"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote_lab_url(cml_sim, tmp_path):
    with remote_lab_server(cml_sim=cml_sim, storage_dir=tmp_path / "server-files") as url:
        yield url


def test_create_wait_acquire_release_close(remote_lab_url, ec2, cml):
    worker = placeable_worker(session_pool="default")
    lines = []
    # Anonymous: the client is on loopback, where anonymous clients are allowed by default.
    with RemoteLabClient(remote_lab_url, timeout=10, heartbeat_interval=0.2) as client:
        created = client.create_session()
        assert created.position == 0
        assert client.wait_until_active(timeout=10, poll_interval=0.1, progress=lines.append).active

        lab = client.acquire(TOPOLOGY)
        assert lab.devices and all(device["name"] and isinstance(device["raw"], dict) for device in lab.devices)
        assert {device["name"] for device in client.devices()} == {device["name"] for device in lab.devices}

        deadline = time.monotonic() + 5
        while client.heartbeats_sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.heartbeats_sent >= 1 and not client.session_lost

        assert Session.objects.get(pk=client.session_id).status == SessionStatus.ACTIVE
        client.release()
        session_id = client.session_id
    assert client.closed and not client.heartbeat_running
    assert Session.objects.get(pk=session_id).status == SessionStatus.ENDED
    lab = SessionLab.objects.get(worker=worker)
    assert lab.status == LabStatus.RUNNING and lab.ref_count == 0  # released, kept for reuse
    assert cml.summary()["labs"][lab.cml_lab_id]["state"] == "BOOTED"

    with RemoteLabClient(remote_lab_url, heartbeat_interval=None) as probe:
        probe.session_id = session_id  # the ended session is gone
        with pytest.raises(SessionNotFound):
            probe.status()
