"""The CML gateway (apps.workers.cml) driving the real virl2-client over HTTP to the CML simulator.

No mocks: every test talks HTTP to a CmlSimulator on 127.0.0.1.
"""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from apps.workers.cml import (
    CmlError,
    cml_lab_delete,
    cml_lab_export_yaml,
    cml_lab_import,
    cml_lab_node_configs,
    cml_lab_node_states,
    cml_lab_nodes,
    cml_lab_start,
    cml_lab_state,
    cml_lab_stop,
    cml_lab_wipe,
    cml_license_deregister,
    cml_license_register,
    cml_system_status,
)
from simulators.cml import CmlSimulator

ROOT = Path(__file__).resolve().parents[2]
TWO_ROUTERS = (ROOT / "examples/topologies/two-routers.yaml").read_text()
FAST = {"wait_timeout": 5.0, "poll_interval": 0.02}


@pytest.fixture(scope="module")
def sim():
    simulator = CmlSimulator(username="admin", password="s3cret-pw", max_nodes=20).start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def _fresh(sim):
    sim.reset()
    yield


@pytest.fixture
def cml(sim):
    """The keyword arguments every gateway call takes."""
    return {"url": sim.url, "username": "admin", "password": "s3cret-pw"}


def semantic(topology_yaml: str) -> dict:
    """What a topology means, without ids, coordinates defaults or schema version."""
    data = yaml.safe_load(topology_yaml)
    nodes = {node["id"]: node for node in data["nodes"]}

    def end(node_id, iface_id):
        node = nodes[node_id]
        return node["label"], next(i["label"] for i in node["interfaces"] if i["id"] == iface_id)

    return {
        "title": data["lab"]["title"],
        "description": data["lab"].get("description", ""),
        "nodes": sorted(
            (n["label"], n["node_definition"], n.get("x", 0), n.get("y", 0),
             tuple((i["label"], i.get("slot"), i.get("type", "physical")) for i in n.get("interfaces", [])))
            for n in data["nodes"]
        ),
        "links": sorted(
            tuple(sorted([end(link["n1"], link["i1"]), end(link["n2"], link["i2"])])) for link in data["links"]
        ),
    }


# --- system status and faults ------------------------------------------------------------


def test_it_reports_an_available_licensed_host(cml):
    status = cml_system_status(**cml, timeout=5)

    assert status.reachable and status.cml_service_status == "available"
    assert status.version.startswith("2.10.")
    assert (status.license_status, status.license_tier) == ("registered", "enterprise")
    assert status.license_registration == "COMPLETED" and status.license_authorization == "IN_COMPLIANCE"
    assert status.health_valid is True and status.health_issues == ()
    assert 0 <= status.cpu_percent <= 100 and status.cpu_count == 16
    assert status.memory_total_gb == 64 and 0 < status.memory_used_gb < 64
    assert status.nodes_running == 0


def test_a_down_host_is_unavailable(cml, sim):
    sim.set_faults(down=True)

    status = cml_system_status(**cml, timeout=5)

    assert status.cml_service_status == "unavailable"
    assert status.reachable is True  # something answered, with a 503
    assert "503" in status.error


def test_a_host_that_drops_connections_is_unavailable(cml, sim):
    sim.set_faults(down=True, down_mode="drop")

    status = cml_system_status(**cml, timeout=5)

    assert (status.reachable, status.cml_service_status) == (False, "unavailable")


def test_a_refused_connection_is_unavailable():
    gone = CmlSimulator().start()
    url = gone.url
    gone.stop()

    status = cml_system_status(url=url, username="admin", password="x", timeout=2)

    assert (status.reachable, status.cml_service_status) == (False, "unavailable")
    assert "unreachable" in status.error
    with pytest.raises(CmlError) as caught:
        cml_lab_state(url=url, username="admin", password="x", lab_id="nope", timeout=2)
    assert caught.value.kind == CmlError.UNREACHABLE


def test_an_expired_licence_is_reported_expired_and_blocks_starts(cml, sim):
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    sim.set_faults(license_expired=True)

    status = cml_system_status(**cml)

    assert status.cml_service_status == "available"
    assert (status.license_status, status.license_authorization) == ("expired", "AUTHORIZED_EXPIRED")
    assert status.health_valid is False and "not licensed" in status.health_issues
    with pytest.raises(CmlError) as caught:
        cml_lab_start(**cml, lab_id=lab_id)
    assert caught.value.kind == CmlError.REFUSED and "expired" in str(caught.value)


def test_refused_credentials_raise_an_auth_error(cml, sim):
    with pytest.raises(CmlError) as wrong_password:
        cml_system_status(**{**cml, "password": "wrong-pw"})
    sim.set_faults(auth_fail=True)
    with pytest.raises(CmlError) as auth_fault:
        cml_system_status(**cml)

    for caught in (wrong_password, auth_fault):
        assert caught.value.kind == CmlError.AUTH
        assert "s3cret-pw" not in str(caught.value) and "wrong-pw" not in str(caught.value)


def test_an_unsupported_cml_version_raises_incompatible():
    with CmlSimulator(version="3.0.0") as cml_3, pytest.raises(CmlError) as caught:
        cml_system_status(url=cml_3.url, username="admin", password="sim-password")

    assert caught.value.kind == CmlError.INCOMPATIBLE


def test_a_slow_host_is_unavailable_within_the_timeout(cml, sim):
    sim.set_faults(slow=3.0)

    started = time.monotonic()
    status = cml_system_status(**cml, timeout=0.5)
    elapsed = time.monotonic() - started

    assert status.cml_service_status == "unavailable" and status.reachable is False
    assert elapsed < 1.5


def test_the_timeout_bounds_the_whole_check_not_each_request(cml, sim):
    # Each request answers in 0.3 s, under the 1 s timeout, but a check makes about seven.
    sim.set_faults(slow=0.3)

    started = time.monotonic()
    status = cml_system_status(**cml, timeout=1.0)
    elapsed = time.monotonic() - started

    assert status.cml_service_status == "unavailable"
    assert elapsed < 1.5


def test_faults_can_be_switched_over_http(cml, sim):
    httpx.post(f"{sim.url}/_sim/faults", json={"down": True}, timeout=5).raise_for_status()
    assert cml_system_status(**cml).cml_service_status == "unavailable"
    assert httpx.get(f"{sim.url}/_sim/faults", timeout=5).json()["down"] is True

    httpx.post(f"{sim.url}/_sim/reset", timeout=5).raise_for_status()
    assert cml_system_status(**cml).cml_service_status == "available"


# --- labs ------------------------------------------------------------------------------


def test_a_lab_goes_through_its_whole_life(cml):
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    assert cml_lab_state(**cml, lab_id=lab_id) == "DEFINED_ON_CORE"
    assert [n.console_key for n in cml_lab_nodes(**cml, lab_id=lab_id)] == [None, None]

    assert cml_lab_start(**cml, lab_id=lab_id, wait=True, **FAST) == "BOOTED"

    states = cml_lab_node_states(**cml, lab_id=lab_id)
    assert [(s.label, s.state) for s in states] == [("router1", "BOOTED"), ("router2", "BOOTED")]
    nodes = cml_lab_nodes(**cml, lab_id=lab_id)
    assert [(n.label, n.node_definition) for n in nodes] == [("router1", "iosv"), ("router2", "iosv")]
    assert all(n.console_key and n.console_path == f"/{lab_id}/{n.id}/0" for n in nodes)
    assert cml_system_status(**cml).nodes_running == 2
    assert semantic(cml_lab_export_yaml(**cml, lab_id=lab_id)) == semantic(TWO_ROUTERS)
    configs = cml_lab_node_configs(**cml, lab_id=lab_id)
    assert "hostname router1" in configs["router1"] and "hostname router2" in configs["router2"]

    assert cml_lab_stop(**cml, lab_id=lab_id, wait=True, **FAST) == "STOPPED"
    assert cml_system_status(**cml).nodes_running == 0
    assert cml_lab_wipe(**cml, lab_id=lab_id, wait=True, **FAST) == "DEFINED_ON_CORE"
    cml_lab_delete(**cml, lab_id=lab_id)

    with pytest.raises(CmlError) as caught:
        cml_lab_state(**cml, lab_id=lab_id)
    assert caught.value.kind == CmlError.NOT_FOUND


def test_nodes_boot_over_the_configured_delay(cml, sim):
    sim.configure(boot_delay=0.3)
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)

    assert cml_lab_start(**cml, lab_id=lab_id) == "STARTED"
    assert {s.state for s in cml_lab_node_states(**cml, lab_id=lab_id)} == {"STARTED"}
    assert cml_lab_start(**cml, lab_id=lab_id, wait=True, **FAST) == "BOOTED"


def test_a_wait_that_does_not_converge_times_out(cml, sim):
    sim.configure(boot_delay=30)
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)

    with pytest.raises(CmlError) as caught:
        cml_lab_start(**cml, lab_id=lab_id, wait=True, wait_timeout=0.2, poll_interval=0.05)

    assert caught.value.kind == CmlError.TIMEOUT


def test_it_refuses_a_start_beyond_the_node_capacity(cml, sim):
    sim.configure(max_nodes=3)
    first = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    second = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    cml_lab_start(**cml, lab_id=first)

    with pytest.raises(CmlError) as caught:
        cml_lab_start(**cml, lab_id=second)

    assert caught.value.kind == CmlError.REFUSED and caught.value.status_code == 400
    assert "capacity" in str(caught.value)
    assert cml_lab_state(**cml, lab_id=second) == "DEFINED_ON_CORE"


def test_it_refuses_to_wipe_or_delete_a_running_lab_unless_forced(cml):
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS, title="renamed")
    cml_lab_start(**cml, lab_id=lab_id)

    for operation in (cml_lab_wipe, cml_lab_delete):
        with pytest.raises(CmlError) as caught:
            operation(**cml, lab_id=lab_id)
        assert caught.value.kind == CmlError.REFUSED

    cml_lab_delete(**cml, lab_id=lab_id, force=True, **FAST)
    cml_lab_delete(**cml, lab_id=lab_id, missing_ok=True)
    with pytest.raises(CmlError) as caught:
        cml_lab_delete(**cml, lab_id=lab_id)
    assert caught.value.kind == CmlError.NOT_FOUND


def test_the_import_title_overrides_the_topology_title(cml):
    lab_id = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS, title="student-42")

    assert yaml.safe_load(cml_lab_export_yaml(**cml, lab_id=lab_id))["lab"]["title"] == "student-42"


def test_it_refuses_an_invalid_topology(cml):
    unparsable = "nodes: [\n"
    node_without_definition = "nodes:\n  - id: n0\n"
    dangling_link = "lab: {title: x}\nnodes: []\nlinks:\n  - {n1: a, n2: b, i1: c, i2: d}\n"
    for bad in (unparsable, node_without_definition, dangling_link):
        with pytest.raises(CmlError) as caught:
            cml_lab_import(**cml, topology_yaml=bad)
        assert caught.value.kind == CmlError.REFUSED and "Invalid topology" in str(caught.value)


# --- licensing -------------------------------------------------------------------------


def test_licence_deregistration_and_registration_change_the_status(cml):
    assert cml_license_deregister(**cml) == "unregistered"
    assert cml_system_status(**cml).license_status == "unregistered"

    assert cml_license_register(**cml, token="good-token-123") == "registered"
    assert cml_system_status(**cml).license_status == "registered"


def test_a_failed_registration_raises_without_the_token(cml):
    cml_license_deregister(**cml)

    with pytest.raises(CmlError) as caught:
        cml_license_register(**cml, token="invalid-token-xyz")

    assert caught.value.kind == CmlError.REFUSED
    assert "invalid-token-xyz" not in str(caught.value)
    assert cml_system_status(**cml).license_status == "unregistered"


# --- the simulator as a process ----------------------------------------------------------


def test_the_simulator_runs_as_a_process():
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.cml", "--port", "0", "--print-url", "--boot-delay", "0",
         "--password", "pw-process"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status = cml_system_status(url=url, username="admin", password="pw-process")
        assert status.cml_service_status == "available"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_a_simulator_restarted_on_its_state_file_has_the_same_labs(tmp_path):
    """`make run` (--state-file var/sim/cml.json): labs, node ids and states outlive the process; a booted lab
    comes back booted, one still booting keeps booting."""
    state = tmp_path / "cml.json"
    first = CmlSimulator(username="admin", password="pw-state", boot_delay=0.0, state_file=state).start()
    cml = {"url": first.url, "username": "admin", "password": "pw-state"}
    booted = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    cml_lab_start(**cml, lab_id=booted, wait=True, **FAST)
    defined = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS, title="defined only")
    first.configure(boot_delay=60)
    booting = cml_lab_import(**cml, topology_yaml=TWO_ROUTERS)
    cml_lab_start(**cml, lab_id=booting)
    nodes = {lab: [(n.id, n.label) for n in cml_lab_nodes(**cml, lab_id=lab)] for lab in (booted, defined, booting)}
    exported = cml_lab_export_yaml(**cml, lab_id=booted)
    first.stop()

    second = CmlSimulator(username="admin", password="pw-state", boot_delay=0.0, state_file=state).start()
    try:
        cml = {**cml, "url": second.url}
        assert {lab: cml_lab_state(**cml, lab_id=lab) for lab in nodes} == {
            booted: "BOOTED", defined: "DEFINED_ON_CORE", booting: "STARTED"}
        assert {lab: [(n.id, n.label) for n in cml_lab_nodes(**cml, lab_id=lab)] for lab in nodes} == nodes
        assert cml_lab_export_yaml(**cml, lab_id=booted) == exported
    finally:
        second.stop()
    assert not CmlSimulator(password="pw-state").controller.labs  # without a state file: in memory only
