"""Consoles that lead somewhere (CML PATty): each port definition's device is tagged with its allocated port in the
topology sent to CML; the CML simulator then serves that device's console on the port (127.0.0.1) while the lab
runs, and closes it when the lab stops. A port definition whose device is not in the topology is a 422.

Everything over real connections: the API through the Django test client, CML over HTTP to the simulator, the
consoles over plain TCP sockets. Waits are on conditions (tests/waiting.py)."""

import contextlib
import copy
import random
import socket

import pytest
import yaml

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletDefinition
from apps.lablets.patty import patty_tag, topology_with_console_tags
from apps.workers import cml as cml_gateway
from apps.workers.services.cml import cml_credentials
from tests.factories import LabletDefinitionFactory, instance_in, placeable_worker
from tests.lablets.engine_support import (
    CONSOLE_HOST,
    PORTS,
    TWO_ROUTERS,
    fresh,
    running_worker,
    scheduled,
    two_router_definition,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db
DEFINITIONS = "/api/lablet-definitions"
INSTANCES = "/api/lablet-instances"
ONE_ROUTER = """lab:
  title: one-router
nodes:
  - id: n0
    label: router1
    node_definition: iosv
    interfaces: []
links: []
"""
BODY = {
    "name": "patty-lab", "version": "1.0", "cml_lab_yaml": TWO_ROUTERS,
    "resource_requirements": {"cpu_cores": 2, "memory_gb": 2, "storage_gb": 10, "node_count": 2},
    "port_definitions": PORTS,
}


@pytest.fixture
def free_ports(settings):
    """A block of console ports nothing listens on now (other test runs share this machine's loopback)."""
    for _ in range(50):
        first = random.randrange(20000, 29000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + 4):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        settings.CONSOLE_PORT_MIN, settings.CONSOLE_PORT_MAX = first, first + 3
        return first
    pytest.fail("no free block of four ports on 127.0.0.1")


class Console:
    """A plain TCP client of one console port."""

    def __init__(self, host: str, port: int):
        self.socket = socket.create_connection((host, port), timeout=5)
        self.seen = b""

    def read_until(self, text: str) -> str:
        while text.encode() not in self.seen:
            data = self.socket.recv(4096)
            if not data:
                raise AssertionError(f"the console closed before {text!r}; it sent {self.seen!r}")
            self.seen += data
        before, _, self.seen = self.seen.partition(text.encode())
        return before.decode() + text

    def send(self, line: str) -> None:
        self.socket.sendall(line.encode() + b"\r\n")

    def closed(self) -> bool:
        self.socket.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while self.socket.recv(4096):
                pass
        return True

    def close(self) -> None:
        self.socket.close()


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def running(cml):
    worker = running_worker()
    definition = two_router_definition()
    instance = scheduled(worker, definition)
    lifecycle_tick()
    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    return instance


# --- consoles over TCP ---------------------------------------------------------------------------


def test_each_console_port_is_the_devices_console_over_tcp(cml, free_ports, admin_client):
    instance = running(cml)

    console = admin_client.get(f"{INSTANCES}/{instance.public_id}").json()["console"]
    assert [(c["name"], c["device_name"], c["host"], c["port"]) for c in console] == [
        ("r1-console", "router1", CONSOLE_HOST, free_ports), ("r2-telnet", "router2", CONSOLE_HOST, free_ports + 1)]
    for entry in console:
        device = Console(entry["host"], entry["port"])
        try:
            label = entry["device_name"]
            assert f"{label}>" in device.read_until(f"{label}>")
            device.send("show version")
            answer = device.read_until(f"{label}>")
            assert "Cisco IOS Software" in answer and f"{label} uptime is" in answer
            device.send("enable")
            device.read_until(f"{label}#")
            device.send("configure the moon")
            assert "% Invalid input detected" in device.read_until(f"{label}#")
        finally:
            device.close()


def test_the_topology_sent_to_cml_carries_the_patty_tags_and_the_definition_is_unchanged(cml, free_ports):
    instance = running(cml)

    nodes = {node.label: node.attrs.get("tags") for node in cml.controller.labs[instance.cml_lab_id].nodes}
    assert nodes == {"router1": [f"serial:{free_ports}"], "router2": [f"serial:{free_ports + 1}"]}
    assert LabletDefinition.objects.get(pk=instance.definition_id).cml_lab_yaml == TWO_ROUTERS


def test_terminating_the_instance_closes_its_consoles(cml, free_ports, admin_client):
    instance = running(cml)
    device = Console(CONSOLE_HOST, free_ports)
    device.read_until("router1>")

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    assert response.status_code == 200 and response.json()["status"] == "terminated", response.content
    assert device.closed()  # the open session ended
    for port in (free_ports, free_ports + 1):
        wait_until(lambda port=port: refused(CONSOLE_HOST, port), what=f"port {port} to refuse connections")
    device.close()


def test_workers_sharing_a_console_host_never_share_a_port(cml, free_ports):
    first, second = running_worker(), running_worker()
    definition = two_router_definition()
    one, two = scheduled(first, definition), scheduled(second, definition)

    lifecycle_tick()

    ports = [[entry["port"] for entry in fresh(instance).console] for instance in (one, two)]
    assert sorted(ports[0] + ports[1]) == list(range(free_ports, free_ports + 4))
    for port in range(free_ports, free_ports + 4):
        Console(CONSOLE_HOST, port).close()  # each one a console of its own


# --- the tags ------------------------------------------------------------------------------------


def test_each_console_type_gets_its_patty_tag():
    assert patty_tag({"console_type": "serial"}, 9000) == "serial:9000"
    assert patty_tag({"console_type": "telnet", "port": 23}, 9001) == "serial:9001"
    assert patty_tag({"console_type": "vnc"}, 9002) == "vnc:9002"
    assert patty_tag({"console_type": "ssh"}, 9003) == "pat:tcp:9003:22"
    assert patty_tag({"console_type": "https", "port": 8443}, 9004) == "pat:tcp:9004:8443"


def test_tags_already_on_a_node_are_kept():
    text = TWO_ROUTERS.replace("label: router1\n", "label: router1\n    tags: [core]\n")
    tagged = yaml.safe_load(topology_with_console_tags(text, port_definitions=PORTS[:1],
                                                       ports=[{"name": "r1-console", "port": 9000}]))
    assert tagged["nodes"][0]["tags"] == ["core", "serial:9000"]
    assert "tags" not in tagged["nodes"][1]


# --- a device that is not in the topology is a 422 ------------------------------------------------


def test_a_port_definition_naming_an_unknown_device_is_422_on_create(admin_client):
    body = {**copy.deepcopy(BODY), "port_definitions": [*PORTS, {"name": "sw", "device_name": "switch9",
                                                               "console_type": "serial"}]}

    response = admin_client.post(DEFINITIONS, body, format="json")

    assert response.status_code == 422, response.content
    problem = response.json()
    assert "switch9" in problem["errors"]["port_definitions"][0]
    assert not LabletDefinition.objects.filter(name="patty-lab").exists()


def test_a_topology_that_drops_a_named_device_is_422_on_update(admin_client):
    created = admin_client.post(DEFINITIONS, copy.deepcopy(BODY), format="json")
    assert created.status_code == 201, created.content
    url = f"{DEFINITIONS}/{created.json()['id']}"

    response = admin_client.put(url, {"cml_lab_yaml": ONE_ROUTER}, format="json")
    renamed = admin_client.put(url, {"port_definitions": [{"name": "x", "device_name": "router7",
                                                           "console_type": "vnc"}]}, format="json")

    assert response.status_code == 422 and "router2" in response.json()["errors"]["port_definitions"][0]
    assert renamed.status_code == 422 and "router7" in renamed.json()["errors"]["port_definitions"][0]
    assert LabletDefinition.objects.get(public_id=created.json()["id"]).cml_lab_yaml == TWO_ROUTERS


def test_a_sync_from_a_lab_without_a_named_device_is_422(admin_client, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(cml_lab_yaml=TWO_ROUTERS, port_definitions=PORTS)
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=ONE_ROUTER, title="reference")
    instance_in("running", worker=worker, cml_lab_id=lab_id)  # a lab the admin may sync from

    response = admin_client.post(f"{DEFINITIONS}/{definition.public_id}/sync",
                                 {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")

    assert response.status_code == 422, response.content
    assert "router2" in response.json()["errors"]["port_definitions"][0]
    assert LabletDefinition.objects.get(pk=definition.pk).cml_lab_yaml == TWO_ROUTERS


def test_a_worker_names_its_own_console_host_through_the_journalled_connection_change(cml, free_ports):
    from apps.audit.models import AuditEvent
    from apps.workers.services import worker_update_connection

    worker = running_worker()
    worker_update_connection(worker=worker, actor="operator", changes={"console_host": "localhost"})
    instance = scheduled(worker, two_router_definition())

    lifecycle_tick()

    assert {entry["host"] for entry in fresh(instance).console} == {"localhost"}
    event = AuditEvent.objects.filter(event_type="worker.updated", resource_id=worker.public_id).latest("id")
    assert event.metadata["changed"] == ["console_host"] and event.metadata["console_host"] == "localhost"
    device = Console("localhost", fresh(instance).console[0]["port"])
    try:
        assert "router1>" in device.read_until("router1>")
    finally:
        device.close()
