"""RemoteLabClient against the in-process fake of the remote-lab API (tests/remote_lab/fake_server.py)."""

import logging
import socket
import threading
import time

import pytest

from labmanager_remote_lab import (
    ClientClosed,
    LabConflict,
    RemoteAuthenticationFailed,
    RemoteLabClient,
    RemoteLabConnectionError,
    RemoteLabError,
    RemoteQueueFull,
    SessionLocked,
    SessionNotFound,
    WaitTimeout,
)
from labmanager_remote_lab import client as client_module
from labmanager_remote_lab.client import format_wait

TOPOLOGY = "lab:\n  title: t\nnodes: []\nlinks: []\n"


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY)
    return path


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- sessions ---------------------------------------------------------------------------------------


def test_create_session_on_an_empty_queue_is_active_at_once(make_client, fake_server):
    client = make_client()
    created = client.create_session()
    assert created.position == 0 and created.session_id == client.session_id
    session_id, position = created  # unpacks like a tuple
    assert fake_server.queue == [session_id]
    status = client.status()
    assert status.active and status.position == 0 and status.estimated_wait_seconds is None


def test_wait_until_active_reports_position_and_estimated_wait(make_client, fake_server):
    first, second = make_client(), make_client()
    first.create_session()
    assert second.create_session().position == 1
    lines = []

    def progress(line):
        lines.append(line)
        if len(lines) == 1:
            first.close()  # the head leaves: the second session is promoted

    status = second.wait_until_active(timeout=5, poll_interval=0.01, progress=progress)
    assert status.active and status.position == 0
    assert lines[0] == (f"remote-lab: session {second.session_id} waiting, position 1, "
                        f"estimated wait ~1m 30s")
    assert lines[-1] == f"remote-lab: session {second.session_id} is active"
    assert fake_server.queue == [second.session_id]


def test_wait_until_active_prints_by_default_and_only_on_change(make_client, fake_server, capsys):
    fake_server.add_session()
    client = make_client()
    client.create_session()
    fake_server.auto_advance_after = 4  # four polls at position 1, then the head is gone
    client.wait_until_active(timeout=5, poll_interval=0.01)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"remote-lab: session {client.session_id} waiting, position 1, estimated wait ~1m 30s",
                   f"remote-lab: session {client.session_id} is active"]


@pytest.mark.parametrize("every, waiting_lines", [(15.0, 1), (0.0, 5)])
def test_a_changing_estimate_alone_is_shown_at_most_every_so_often(make_client, fake_server, monkeypatch,
                                                                   every, waiting_lines):
    monkeypatch.setattr(client_module, "PROGRESS_EVERY", every)
    fake_server.add_session()
    client = make_client()
    client.create_session()
    fake_server.auto_advance_after = 6
    status = client.status

    def status_with_a_new_estimate():
        fake_server.wait_per_position += 10  # the estimate changes on every poll, the position does not
        return status()

    monkeypatch.setattr(client, "status", status_with_a_new_estimate)
    lines = []
    client.wait_until_active(timeout=5, poll_interval=0.01, progress=lines.append)
    assert len(lines) == waiting_lines + 1 and lines[-1].endswith("is active")
    assert lines[0].endswith("position 1, estimated wait ~1m 40s")


def test_wait_until_active_times_out(make_client, fake_server):
    fake_server.add_session()
    client = make_client()
    client.create_session()
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="not active after 0.2s"):
        client.wait_until_active(timeout=0.2, poll_interval=0.05, progress=None)
    assert time.monotonic() - started < 2


def test_start_retries_while_the_queue_is_full(make_client, fake_server):
    fake_server.fail("POST", "/session", 503, "The session queue is full.", headers={"Retry-After": "0"},
                     times=2)
    lines = []
    client = make_client()
    assert client.start(timeout=5, poll_interval=0.01, progress=lines.append).active
    assert lines == ["remote-lab: queue full, retrying in 0.05s"] * 2
    assert len(fake_server.requests_to("POST", "/session")) == 3


def test_start_gives_up_when_the_queue_stays_full(make_client, fake_server):
    fake_server.max_queue = 0
    with pytest.raises(WaitTimeout, match="queue stayed full") as info:
        make_client().start(timeout=1, progress=None)  # Retry-After 7 > timeout: no pointless sleep
    assert info.value.status_code == 503


def test_close_ends_the_session_and_is_idempotent(make_client, fake_server):
    client = make_client()
    session_id = client.create_session().session_id
    client.close()
    client.close()
    assert fake_server.queue == []
    assert len(fake_server.requests_to("DELETE", f"/session/{session_id}")) == 1
    assert client.closed and client.session_id is None
    with pytest.raises(ClientClosed):
        client.status()


def test_close_of_a_session_the_server_already_dropped_is_fine(make_client, fake_server):
    client = make_client()
    session_id = client.create_session().session_id
    fake_server.drop(session_id)
    client.close()
    assert client.closed


def test_close_without_a_session_sends_nothing(make_client, fake_server):
    make_client().close()
    assert fake_server.requests == []


def test_context_manager_closes(fake_server):
    with RemoteLabClient(fake_server.url, heartbeat_interval=None) as client:
        client.create_session()
    assert client.closed and fake_server.queue == []


def test_auth_headers(make_client, fake_server):
    make_client(api_key="k-123").create_session()
    make_client(token="t-456").create_session()
    anonymous = make_client()
    anonymous.create_session()
    first, second, third = fake_server.requests_to("POST", "/session")
    assert first["X-API-Key"] == "k-123" and "Authorization" not in first
    assert second["Authorization"] == "Bearer t-456" and "X-API-Key" not in second
    assert "X-API-Key" not in third and "Authorization" not in third


# --- lab ----------------------------------------------------------------------------------------------


def test_acquire_devices_release_destroy(make_client, fake_server, topology, tmp_path):
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("x: 1\n")
    client = make_client()
    client.create_session()
    lab = client.acquire(topology, extra_files=[vars_file, ("config.txt", b"hostname r1\n")])
    assert lab.reused is False
    assert [d["name"] for d in lab.devices] == ["r1", "r2"] and lab.devices[0]["raw"]["mgmt_ip"]
    upload = fake_server.uploads[-1]
    assert upload["topology"][0] == {"filename": "topo.yaml", "content": TOPOLOGY.encode()}
    assert upload["reuse"][0]["content"] == b"true"
    assert [f["filename"] for f in upload["extra_files"]] == ["vars.yml", "config.txt"]
    headers = fake_server.requests_to("POST", "/lab")[-1]
    assert headers["X-Session-ID"] == client.session_id

    assert client.acquire(topology).reused is True  # same content: attach
    assert client.devices() == lab.devices
    client.release()
    assert fake_server.lab["refs"] == set()
    assert client.destroy_lab() is True  # 202: teardown dispatched
    assert client.destroy_lab() is False  # 204: nothing ran
    with pytest.raises(SessionNotFound, match="No lab is running"):
        client.devices()


def test_acquire_without_reuse_sends_false(make_client, fake_server, topology):
    client = make_client()
    client.create_session()
    assert client.acquire(topology, reuse=False).reused is False
    assert fake_server.uploads[-1]["reuse"][0]["content"] == b"false"


def test_lab_calls_need_a_session(make_client, topology):
    with pytest.raises(RemoteLabError, match="no session"):
        make_client().acquire(topology)


# --- errors ---------------------------------------------------------------------------------------------


def test_unknown_session_is_session_not_found(make_client, fake_server):
    client = make_client()
    session_id = client.create_session().session_id
    fake_server.drop(session_id)
    with pytest.raises(SessionNotFound) as info:
        client.status()
    assert info.value.status_code == 404 and info.value.detail == "Session not found"
    assert info.value.problem["title"] == "Not Found"


def test_waiting_session_is_locked_out_of_the_lab(make_client, fake_server, topology):
    fake_server.add_session()
    client = make_client()
    client.create_session()
    with pytest.raises(SessionLocked) as info:
        client.acquire(topology)
    assert info.value.status_code == 423 and info.value.detail == "Session is not active"
    with pytest.raises(SessionLocked):
        client.release()


def test_non_forced_destroy_of_a_lab_in_use_is_a_conflict(make_client, topology):
    client = make_client()
    client.create_session()
    client.acquire(topology)
    with pytest.raises(LabConflict) as info:
        client.destroy_lab(force=False)
    assert info.value.status_code == 409 and info.value.detail == "Lab is still in use"
    client.release()
    assert client.destroy_lab(force=False) is True


def test_full_queue_is_queue_full_with_retry_after(make_client, fake_server):
    fake_server.max_queue = 1
    make_client().create_session()
    with pytest.raises(RemoteQueueFull) as info:
        make_client().create_session()
    assert info.value.status_code == 503 and info.value.retry_after == 7.0
    assert info.value.detail == "The session queue is full."


def test_seed_style_error_bodies_and_other_statuses(make_client, fake_server):
    client = make_client()
    fake_server.fail("POST", "/session", 404, "Session gone", seed_style=True)
    with pytest.raises(SessionNotFound, match="Session gone") as info:
        client.create_session()
    assert info.value.problem == {"detail": "Session gone"}
    fake_server.fail("POST", "/session", 401, "Authentication credentials were not provided.")
    with pytest.raises(RemoteAuthenticationFailed):
        client.create_session()
    fake_server.fail("POST", "/session", 500, "boom")
    with pytest.raises(RemoteLabError) as info:
        client.create_session()
    assert type(info.value) is RemoteLabError and info.value.status_code == 500 and info.value.detail == "boom"


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = RemoteLabClient(f"http://127.0.0.1:{port}/api/remote-lab", timeout=1, heartbeat_interval=None)
    with pytest.raises(RemoteLabConnectionError) as info:
        client.create_session()
    assert info.value.status_code is None
    client.close()


# --- heartbeats -----------------------------------------------------------------------------------------


def test_heartbeats_run_in_the_background_and_stop_on_close(make_client, fake_server):
    client = make_client(heartbeat_interval=0.02)
    session_id = client.create_session().session_id
    assert client.heartbeat_running
    assert wait_for(lambda: fake_server.heartbeats_of(session_id) >= 3)
    assert all(h["X-Session-ID"] == session_id for h in fake_server.requests_to("POST", "/session/heartbeat"))
    thread = next(t for t in threading.enumerate() if t.name == f"remote-lab-heartbeat-{session_id}")
    assert thread.daemon
    client.close()
    assert not thread.is_alive() and not client.heartbeat_running
    # Stopped for good, shown without watching the clock: the heartbeats' only sender is the thread close()
    # joined, and no other heartbeat thread of this session is left in the process to send one.
    assert [t for t in threading.enumerate() if t.name == thread.name] == []


def test_heartbeats_survive_transient_errors(make_client, fake_server, caplog):
    fake_server.fail("POST", "/session/heartbeat", 500, "database is locked", times=2)
    client = make_client(heartbeat_interval=0.02)
    with caplog.at_level(logging.WARNING, logger="labmanager_remote_lab"):
        session_id = client.create_session().session_id
        assert wait_for(lambda: fake_server.heartbeats_of(session_id) >= 2)
        # the warning is logged after the answer arrives: wait for it too (the thread may lag under load)
        assert wait_for(lambda: client.heartbeats_sent >= 2 and
                        sum("answered 500" in r.getMessage() for r in caplog.records) >= 2)
    assert client.heartbeat_running and not client.session_lost
    assert client.heartbeats_sent >= 2
    warnings = [r.getMessage() for r in caplog.records if "answered 500" in r.getMessage()]
    assert len(warnings) == 2 and "database is locked" in warnings[0]


def test_heartbeats_stop_when_the_session_is_gone(make_client, fake_server, caplog):
    client = make_client(heartbeat_interval=0.02)
    session_id = client.create_session().session_id
    assert wait_for(lambda: fake_server.heartbeats_of(session_id) >= 1)
    with caplog.at_level(logging.ERROR, logger="labmanager_remote_lab"):
        fake_server.drop(session_id)
        assert wait_for(lambda: not client.heartbeat_running)
    assert client.session_lost
    assert any("is gone" in r.getMessage() for r in caplog.records)
    with pytest.raises(SessionNotFound):
        client.wait_until_active(timeout=1, progress=None)


def test_no_heartbeat_thread_when_disabled(make_client):
    client = make_client(heartbeat_interval=None)
    client.create_session()
    assert not client.heartbeat_running


def test_format_wait():
    assert format_wait(None) == "unknown"
    assert format_wait(44.6) == "~45s"
    assert format_wait(185) == "~3m 05s"
    assert format_wait(3720) == "~1h 02m"


def test_the_smoke_script(fake_server, topology, monkeypatch, capsys):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "scripts" / "smoke.py"
    main = runpy.run_path(str(script))["main"]
    monkeypatch.setenv("BASE_URL", fake_server.url)
    assert main(["smoke.py", str(topology)]) == 0
    out = capsys.readouterr().out
    assert "lab started: 2 device(s)" in out and "  r1" in out
    assert fake_server.queue == [] and fake_server.lab["refs"] == set()
    monkeypatch.delenv("BASE_URL")
    assert main(["smoke.py", str(topology)]) == 2
