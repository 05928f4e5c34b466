import pytest

from labmanager_remote_lab import RemoteLabClient
from tests.remote_lab.fake_server import FakeRemoteLab


@pytest.fixture
def fake_server():
    """The fake remote-lab API on 127.0.0.1 (a fresh one per test), stopped afterwards."""
    fake = FakeRemoteLab().start()
    yield fake
    fake.stop()


@pytest.fixture
def make_client(fake_server):
    """RemoteLabClient factory against the fake; every client is closed after the test."""
    clients = []

    def make(**kwargs):
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("heartbeat_interval", None)
        client = RemoteLabClient(kwargs.pop("base_url", fake_server.url), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
