"""The topology policy on lablet definitions (security issue 19, item 7; docs/security.md#topologies): node
definitions from TOPOLOGY_ALLOWED_NODE_DEFINITIONS, external connectors only in a definition an admin marked
`trusted`, caps on nodes, CPUs and memory; checked on create, update and sync (422 problem+json naming the node,
before anything is saved) and again before an instance's lab is imported (the instance fails, nothing reaches
CML). Through the API with real keys, the admin's change form, and the lifecycle tick over HTTP to the CML
simulator."""

from pathlib import Path

import pytest
import yaml
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.lablets.engine import lifecycle_tick
from apps.identity.services import api_key_create
from apps.lablets.models import LabletDefinition
from apps.workers import cml as cml_gateway
from apps.workers.cml import topology_policy
from apps.workers.cml.topology_policy import TopologyRefused, topology_check
from apps.workers.services.cml import cml_credentials
from tests.factories import TOPOLOGY as FACTORY_TOPOLOGY
from tests.factories import LabletDefinitionFactory, placeable_worker
from tests.lablets.engine_support import fresh, labs, running_worker, scheduled, two_router_definition
from tests.lablets.test_api import SEED_DEFINITION, TOPOLOGY, definition_body

pytestmark = pytest.mark.django_db

DEFINITIONS = "/api/lablet-definitions"
ROOT = Path(__file__).resolve().parents[2]
WITH_CONNECTOR = """\
lab:
  title: bridged
nodes:
  - id: n0
    label: router1
    node_definition: iosv
  - id: n1
    label: outside
    node_definition: external_connector
    configuration: NAT
links: []
"""


def nodes_yaml(count: int, *, definition="iosv", **attrs) -> str:
    extra = "".join(f"\n    {key}: {value}" for key, value in attrs.items())
    nodes = "".join(f"\n  - id: n{i}\n    label: r{i}\n    node_definition: {definition}{extra}" for i in range(count))
    return f"lab:\n  title: big\nnodes:{nodes}\nlinks: []\n"


def assert_refused(response, *rules) -> dict:
    assert response.status_code == 422, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert [v["rule"] for v in body["violations"]] == list(rules), body
    assert body["errors"]["cml_lab_yaml"] == [v["detail"] for v in body["violations"]]
    return body


# --- create and update -----------------------------------------------------------------------------


def test_an_instructors_definition_with_an_external_connector_is_422_naming_the_node(instructor_client):
    response = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=WITH_CONNECTOR), format="json")

    body = assert_refused(response, "external_connector")
    assert body["violations"][0]["node"] == {"id": "n1", "label": "outside"}
    assert "node 'outside' (id n1)" in body["detail"] and "(external_connector)" in body["detail"]
    assert not LabletDefinition.objects.exists()


def test_an_unknown_node_definition_is_422(instructor_client):
    response = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=nodes_yaml(1, definition="kali")),
                                      format="json")

    body = assert_refused(response, "node_definition")
    assert body["violations"][0]["node"] == {"id": "n0", "label": "r0"} and "'kali'" in body["detail"]
    assert not LabletDefinition.objects.exists()


def test_too_many_nodes_cpus_or_too_much_memory_is_422(instructor_client, settings):
    settings.TOPOLOGY_MAX_NODES, settings.TOPOLOGY_MAX_CPUS, settings.TOPOLOGY_MAX_MEMORY_MB = 3, 8, 4096

    too_many = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=nodes_yaml(4)), format="json")
    too_big = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=nodes_yaml(2, cpus=5, ram=4000)),
                                     format="json")
    defaults = instructor_client.post(  # no cpus/ram given: iosxrv9000's defaults (4 CPUs, 20 GB) count
        DEFINITIONS, definition_body(cml_lab_yaml=nodes_yaml(1, definition="iosxrv9000")), format="json")

    assert "asks for 4 node(s); at most 3" in assert_refused(too_many, "max_nodes")["detail"]
    assert assert_refused(too_big, "max_cpus", "max_memory_mb")["violations"][0]["node"] is None
    assert_refused(defaults, "max_memory_mb")
    assert not LabletDefinition.objects.exists()


def test_too_much_disk_is_422_naming_the_rule(instructor_client, settings):
    settings.TOPOLOGY_MAX_DISK_GB = 100

    too_much = instructor_client.post(DEFINITIONS, definition_body(
        cml_lab_yaml=nodes_yaml(2, data_volume=40, boot_disk_size=11)), format="json")
    negative = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=nodes_yaml(1, boot_disk_size=-5)),
                                      format="json")
    fits = instructor_client.post(DEFINITIONS, definition_body(
        cml_lab_yaml=nodes_yaml(2, data_volume=40, boot_disk_size=10),
        port_definitions=[{"name": "console_1", "device_name": "r0", "console_type": "serial"}]),  # a node of it
        format="json")

    body = assert_refused(too_much, "max_disk_gb")
    assert "asks for 102 GiB of disk (data_volume + boot_disk_size); at most 100 are allowed (TOPOLOGY_MAX_DISK_GB)" \
        in body["detail"]
    assert "boot_disk_size must be a whole number >= 0" in assert_refused(negative, "malformed")["detail"]
    assert fits.status_code == 201, fits.content
    assert topology_check(nodes_yaml(2, data_volume=40, boot_disk_size=10)).disk_gb == 100


def test_a_definition_with_yaml_aliases_or_over_TOPOLOGY_MAX_BYTES_is_422(instructor_client, settings):
    settings.TOPOLOGY_MAX_BYTES = 2000
    aliased = "x: &big [a, a]\nnodes:\n  - {id: *big, label: r0, node_definition: iosv}\n"

    alias = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=aliased), format="json")
    large = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=TOPOLOGY + "#" * 2000), format="json")

    # refused with the serializer's field errors, as any topology that does not read as YAML
    for response, error in ((alias, "YAML anchors and aliases"), (large, "at most 2000 bytes are allowed "
                                                                          "(TOPOLOGY_MAX_BYTES)")):
        assert response.status_code == 422 and response["Content-Type"].startswith("application/problem+json")
        assert error in response.json()["errors"]["cml_lab_yaml"][0], response.json()
    assert not LabletDefinition.objects.exists()


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
def test_aliases_are_refused_by_either_yaml_reader(loader, monkeypatch):
    """libyaml's parser when PyYAML has it (the venv's has: yaml.__with_libyaml__), PyYAML's own otherwise."""
    if loader == "pure-python":
        monkeypatch.setattr(topology_policy, "_Loader", topology_policy._PyLoader)
    else:
        assert yaml.__with_libyaml__ and topology_policy._Loader.__name__ == "_CLoader"

    with pytest.raises(TopologyRefused, match="anchors and aliases"):
        topology_check("a: &a [x, x]\nb: [*a, *a]\nnodes: []\n")
    with pytest.raises(TopologyRefused, match="anchors and aliases"):
        topology_check("nodes:\n  - &n {id: n0, label: r0, node_definition: iosv}\n")
    example = (ROOT / "examples" / "topologies" / "two-routers.yaml").read_text()
    assert topology_check(example).nodes == 2  # and a topology without them still reads


def test_a_malformed_topology_is_422(instructor_client):
    for text in ("nodes: {a: 1}\n", "nodes:\n  - id: n0\n    label: r1\n", "nodes:\n  - {id: n0, label: r, "
                 "node_definition: iosv, ram: lots}\n"):
        assert_refused(instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=text), format="json"),
                       "malformed")
    assert not LabletDefinition.objects.exists()


def test_an_instructor_cannot_set_trusted(instructor_client, instructor_user, admin_user):
    narrowed = client_for_role(admin_user, "instructor")  # an admin's key narrowed to instructor is an instructor
    created = instructor_client.post(DEFINITIONS, definition_body(trusted=True), format="json")
    definition = LabletDefinitionFactory(created_by=instructor_user)  # the instructor's own: refused for the mark
    changed = instructor_client.put(f"{DEFINITIONS}/{definition.public_id}", {"trusted": True}, format="json")
    by_narrowed = narrowed.put(f"{DEFINITIONS}/{definition.public_id}", {"trusted": True}, format="json")
    same = instructor_client.put(f"{DEFINITIONS}/{definition.public_id}", {"trusted": False}, format="json")

    assert created.status_code == 403 and "trusted" in created.json()["errors"]
    for refused in (changed, by_narrowed):
        assert refused.status_code == 403 and refused["Content-Type"].startswith("application/problem+json")
    assert same.status_code == 200 and same.json()["trusted"] is False  # no change asked: no refusal
    assert not LabletDefinition.objects.filter(trusted=True).exists()
    assert not LabletDefinition.objects.filter(name=SEED_DEFINITION["name"]).exists()
    assert AuditEvent.objects.filter(event_type="api_call.refused").count() == 3


def client_for_role(user, role: str) -> APIClient:
    _, raw = api_key_create(user=user, actor="tests", role=role)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


def _trusted_by_an_admin(admin_client, instructor_client) -> LabletDefinition:
    """An instructor's own definition that an admin marked trusted, with an external connector."""
    created = instructor_client.post(DEFINITIONS, definition_body(), format="json")
    assert created.status_code == 201, created.content
    trusted = admin_client.put(f"{DEFINITIONS}/{created.json()['id']}",
                               {"cml_lab_yaml": WITH_CONNECTOR, "trusted": True}, format="json")
    assert trusted.status_code == 200, trusted.content
    assert trusted.json()["trusted"] is True
    return LabletDefinition.objects.get(public_id=created.json()["id"])


def test_a_trusted_definition_set_by_an_admin_may_use_an_external_connector(admin_client, instructor_client):
    created = admin_client.post(DEFINITIONS, definition_body(name="admins-own", cml_lab_yaml=WITH_CONNECTOR,
                                                             trusted=True), format="json")

    assert created.status_code == 201, created.content
    assert created.json()["trusted"] is True
    event = AuditEvent.objects.get(event_type="lablet_definition.created", resource_id=created.json()["id"])
    assert event.metadata["after"]["trusted"] is True
    # The owner's change of another field keeps the mark
    definition = _trusted_by_an_admin(admin_client, instructor_client)
    described = instructor_client.put(f"{DEFINITIONS}/{definition.public_id}", {"description": "x"}, format="json")
    assert described.status_code == 200 and described.json()["trusted"] is True


def test_an_instructors_change_of_a_trusted_topology_is_checked_untrusted_and_clears_the_mark(
        admin_client, instructor_client):
    definition = _trusted_by_an_admin(admin_client, instructor_client)
    url = f"{DEFINITIONS}/{definition.public_id}"

    bridged = instructor_client.put(url, {"cml_lab_yaml": WITH_CONNECTOR.replace("NAT", "System Bridge")},
                                    format="json")
    plain = instructor_client.put(url, {"cml_lab_yaml": TOPOLOGY}, format="json")

    assert_refused(bridged, "external_connector")
    assert plain.status_code == 200 and plain.json()["trusted"] is False
    event = AuditEvent.objects.filter(event_type="lablet_definition.updated", resource_id=definition.public_id).latest("id")
    assert (event.metadata["before"]["trusted"], event.metadata["after"]["trusted"]) == (True, False)


def test_an_admin_marks_a_definition_trusted_in_the_admin_and_an_operator_cannot(admin_user, operator_user):
    definition = LabletDefinitionFactory()
    url = reverse("admin:lablets_labletdefinition_change", args=[definition.pk])
    operator = Client()
    operator.force_login(operator_user)
    admin = Client()
    admin.force_login(admin_user)

    operator.post(url, {"trusted": "on", "_save": "Save"})
    assert LabletDefinition.objects.get(pk=definition.pk).trusted is False
    assert 'name="trusted"' in admin.get(url).content.decode()
    saved = admin.post(url, {"trusted": "on", "_save": "Save"})

    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert LabletDefinition.objects.get(pk=definition.pk).trusted is True
    event = AuditEvent.objects.filter(event_type="lablet_definition.updated", resource_id=definition.public_id).get()
    assert (event.actor, event.metadata["before"]["trusted"], event.metadata["after"]["trusted"]) == (
        admin_user.username, False, True)


# --- sync ------------------------------------------------------------------------------------------


def test_a_sync_pulling_an_external_connector_into_an_untrusted_definition_is_422(instructor_client, instructor_user,
                                                                                  ec2, cml):
    worker = placeable_worker()
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=WITH_CONNECTOR, title="reference")
    # the instructor's own definition, synced from its reference lab (the only labs a sync may copy)
    definition = LabletDefinitionFactory(created_by=instructor_user, reference_lab_id=lab_id, reference_worker=worker)

    response = instructor_client.post(f"{DEFINITIONS}/{definition.public_id}/sync",
                                      {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")

    body = assert_refused(response, "external_connector")
    assert body["violations"][0]["node"]["label"] == "outside"
    stored = LabletDefinition.objects.get(pk=definition.pk)
    assert (stored.content_hash, stored.cml_lab_yaml) == (definition.content_hash, definition.cml_lab_yaml)


# --- an instance's import: checked again ----------------------------------------------------------


def test_an_instance_of_a_definition_breaking_the_policy_fails_before_its_import(cml):
    worker = running_worker()
    definition = two_router_definition(cml_lab_yaml=WITH_CONNECTOR)  # saved around the services (an old row)
    instance = scheduled(worker, definition)

    lifecycle_tick()

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert instance.termination_reason.startswith("failed: instantiation: The topology is refused "
                                                  "(external_connector): node 'outside' (id n1)")
    assert labs(cml) == {} and cml.calls["POST import"] == 0
    event = AuditEvent.objects.filter(event_type="lablet_instance.terminated", resource_id=instance.public_id).get()
    assert "external_connector" in event.metadata["reason"]


def test_an_instance_of_a_trusted_definition_with_an_external_connector_is_imported(cml):
    worker = running_worker()
    definition = two_router_definition(cml_lab_yaml=WITH_CONNECTOR, trusted=True, port_definitions=[])
    instance = scheduled(worker, definition)

    lifecycle_tick()

    instance = fresh(instance)
    assert instance.status in ("instantiating", "running"), (instance.status, instance.termination_reason)
    assert instance.cml_lab_id in labs(cml) and cml.calls["POST import"] == 1


# --- what exists passes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "topologies").glob("*.y*ml")), ids=lambda p: p.name)
def test_the_example_topologies_pass(path):
    topology_check(path.read_text())


def test_the_test_and_demo_topologies_pass():
    for text in (FACTORY_TOPOLOGY, TOPOLOGY, "lab:\n  title: idem\n"):
        topology_check(text)
