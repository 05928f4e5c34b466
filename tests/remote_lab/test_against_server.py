"""RemoteLabClient against the real remote-lab API (apps/sessions) on pytest-django's live server, with
a worker of the default session pool whose CML is the simulator."""

import time
from pathlib import Path

import pytest

from labmanager.remote_lab import RemoteLabClient, SessionNotFound
from tests.factories import placeable_worker

TOPOLOGY = Path(__file__).resolve().parents[2] / "examples" / "topologies" / "two-routers.yaml"

pytestmark = [
    # Remove once apps/sessions serves /api/remote-lab and Worker has `session_pool`.
    pytest.mark.skip(reason="server side not merged yet"),
    pytest.mark.django_db(transaction=True),
]


def test_create_wait_acquire_release_close(live_server, ec2, cml):
    placeable_worker(session_pool="default")
    lines = []
    # Anonymous: the live server is on loopback, where anonymous clients are allowed by default.
    with RemoteLabClient(f"{live_server.url}/api/remote-lab", timeout=10, heartbeat_interval=0.2) as client:
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

        client.release()
        session_id = client.session_id
    assert client.closed and not client.heartbeat_running

    with RemoteLabClient(f"{live_server.url}/api/remote-lab", heartbeat_interval=None) as probe:
        probe.session_id = session_id  # the ended session is gone
        with pytest.raises(SessionNotFound):
            probe.status()
