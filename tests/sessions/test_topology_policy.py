"""POST /lab and the topology policy (security issue 19, item 7; docs/security.md#topologies): an uploaded
topology is never trusted, and one the policy refuses is a 422 problem+json naming the node and the rule,
answered before anything reaches CML (the simulator counts every request) and with nothing kept on disk.
Through the Django test client, as the remote-lab clients speak."""

import pytest

from apps.sessions.models import SessionLab
from tests.sessions.conftest import TOPOLOGY, acquire, assert_problem, create, nothing_stored

pytestmark = pytest.mark.django_db

BRIDGED = b"""\
lab:
  title: bridged
nodes:
  - id: n0
    label: router1
    node_definition: iosv
  - id: n1
    label: router2
    node_definition: iosv
  - id: n2
    label: ext-nat
    node_definition: external_connector
    configuration: NAT
links: []
"""


def nodes_yaml(count: int, *, definition="iosv", **attrs) -> bytes:
    extra = "".join(f"\n    {key}: {value}" for key, value in attrs.items())
    nodes = "".join(f"\n  - id: n{i}\n    label: r{i}\n    node_definition: {definition}{extra}" for i in range(count))
    return f"lab:\n  title: big\nnodes:{nodes}\nlinks: []\n".encode()


def refused(response, *rules) -> dict:
    body = assert_problem(response, 422)
    assert [v["rule"] for v in body["violations"]] == list(rules), body
    assert body["errors"]["topology"] == [v["detail"] for v in body["violations"]]
    return body


@pytest.fixture
def cml_untouched(cml, storage_dir):
    """After the test: not one request reached the CML simulator, no lab slot was taken, nothing kept."""
    yield
    assert sum(cml.calls.values()) == 0, dict(cml.calls)
    assert cml.summary()["labs"] == {}
    assert not SessionLab.objects.exclude(status="empty").exists()
    assert nothing_stored(storage_dir)


@pytest.mark.parametrize("caller", ["anon", "admin_client"])
def test_an_upload_with_an_external_connector_is_422_naming_the_node_and_cml_sees_nothing(
        request, caller, worker, cml_untouched):
    client = request.getfixturevalue(caller)  # an admin's session too: uploads are never trusted
    session_id = create(client)["session_id"]

    body = refused(acquire(client, session_id, topology=BRIDGED), "external_connector")

    assert body["violations"][0]["node"] == {"id": "n2", "label": "ext-nat"}
    assert body["detail"].startswith("The topology is refused (external_connector): node 'ext-nat' (id n2)")


def test_an_upload_with_too_many_nodes_or_too_much_memory_is_422(anon, worker, settings, cml_untouched):
    session_id = create(anon)["session_id"]

    too_many = acquire(anon, session_id, topology=nodes_yaml(settings.TOPOLOGY_MAX_NODES + 1))
    too_much = acquire(anon, session_id, topology=nodes_yaml(2, ram=settings.TOPOLOGY_MAX_MEMORY_MB))
    too_many_cpus = acquire(anon, session_id, topology=nodes_yaml(1, cpus=settings.TOPOLOGY_MAX_CPUS + 1))

    assert "at most 40 are allowed (TOPOLOGY_MAX_NODES)" in refused(too_many, "max_nodes")["detail"]
    assert refused(too_much, "max_memory_mb")["violations"][0]["node"] is None
    refused(too_many_cpus, "max_cpus")


def test_an_upload_with_an_unknown_node_definition_is_422(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]

    body = refused(acquire(anon, session_id, topology=nodes_yaml(1, definition="kali-linux")), "node_definition")

    assert body["violations"][0]["node"] == {"id": "n0", "label": "r0"}
    assert "'kali-linux'" in body["detail"] and "TOPOLOGY_ALLOWED_NODE_DEFINITIONS" in body["detail"]


def test_a_malformed_upload_is_422_before_cml(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]

    for text in (b"this: [is not, a lab", b"- a list\n", b"nodes: 3\n", b"nodes:\n  - {id: n0, label: r0}\n"):
        refused(acquire(anon, session_id, topology=text), "malformed")


def test_the_allow_list_is_the_setting(anon, worker, settings, cml):
    settings.TOPOLOGY_ALLOWED_NODE_DEFINITIONS = ["alpine"]
    session_id = create(anon)["session_id"]

    refused(acquire(anon, session_id), "node_definition", "node_definition")  # the example's two iosv routers
    settings.TOPOLOGY_ALLOWED_NODE_DEFINITIONS = ["iosv"]
    assert acquire(anon, session_id).status_code == 200
    assert cml.calls["POST import"] == 1


def test_the_example_topology_still_starts(anon, worker, cml):
    session_id = create(anon)["session_id"]

    response = acquire(anon, session_id, topology=TOPOLOGY)

    assert response.status_code == 200, response.content
    assert cml.calls["POST import"] == 1


def alias_bomb(levels: int) -> bytes:
    """The review's repro: ten items, then `levels` - 1 levels of ten aliases of the level below (10**levels
    items once expanded) out of a few hundred bytes, the last one as a node's id."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return ("\n".join(lines) + f"\nnodes: [{{id: *a{levels - 1}, node_definition: iosv}}]\n").encode()


def test_an_alias_bomb_is_422_malformed_and_cml_sees_nothing(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]
    bomb = alias_bomb(7)
    assert len(bomb) < 500  # ten million items once expanded

    body = refused(acquire(anon, session_id, topology=bomb), "malformed")

    assert "YAML anchors and aliases (&name, *name) are not allowed" in body["detail"], body
    assert "line 1, column 5" in body["detail"]  # refused at the first anchor, nothing expanded


def test_a_lone_anchor_or_alias_is_422_malformed(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]

    for text in (b"nodes:\n  - &r {id: n0, label: r0, node_definition: iosv}\n",
                 b"nodes:\n  - {id: n0, label: r0, node_definition: iosv}\nx: *r\n"):
        assert "are not allowed" in refused(acquire(anon, session_id, topology=text), "malformed")["detail"]


def test_a_node_id_or_label_that_is_not_a_string_or_number_is_422_malformed(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]

    for node in (b"{id: [a, b], label: r0, node_definition: iosv}", b"{id: n0, label: {x: 1}, node_definition: iosv}",
                 b"{id: true, label: r0, node_definition: iosv}", b"{id: n0, label: 1.5, node_definition: iosv}"):
        body = refused(acquire(anon, session_id, topology=b"nodes:\n  - " + node + b"\n"), "malformed")
        assert "must be a string or a whole number" in body["detail"], body
        assert set(body["violations"][0]["node"].values()) <= {"n0", "r0", "<list>", "<dict>", "<bool>", "<float>"}


def test_a_topology_over_TOPOLOGY_MAX_BYTES_is_422_before_it_is_parsed(anon, worker, settings, cml_untouched):
    settings.TOPOLOGY_MAX_BYTES = 1000
    session_id = create(anon)["session_id"]
    oversized = TOPOLOGY + b"#" * (1000 - len(TOPOLOGY)) + b"\n: [not yaml"  # parsed, it would be malformed

    body = refused(acquire(anon, session_id, topology=oversized), "too_large")

    assert f"The topology is {len(oversized)} bytes; at most 1000 bytes are allowed (TOPOLOGY_MAX_BYTES)" in (
        body["detail"])


def test_an_upload_asking_for_too_much_disk_is_422_naming_the_rule(anon, worker, settings, cml_untouched):
    session_id = create(anon)["session_id"]

    data = acquire(anon, session_id, topology=nodes_yaml(40, data_volume=100000))
    boot = acquire(anon, session_id, topology=nodes_yaml(2, boot_disk_size=settings.TOPOLOGY_MAX_DISK_GB // 2 + 1))

    assert "asks for 4000000 GiB of disk" in refused(data, "max_disk_gb")["detail"]
    assert "(TOPOLOGY_MAX_DISK_GB)" in refused(boot, "max_disk_gb")["detail"]
    for value in ("-1", "lots", "1.5", "[1]"):
        refused(acquire(anon, session_id, topology=nodes_yaml(1, data_volume=value)), "malformed")


def test_values_the_yaml_reader_refuses_are_422_malformed_not_500(anon, worker, cml_untouched):
    session_id = create(anon)["session_id"]

    for text in (b"nodes: []\nx: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n",  # nested too deeply
                 b"nodes: []\nx: 2001-13-45\n",  # not a date
                 b"nodes: []\nx: " + b"1" * 5000 + b"\n"):  # an int over Python's 4300 digits
        refused(acquire(anon, session_id, topology=text), "malformed")


def test_a_topology_of_more_yaml_items_than_YAML_MAX_ITEMS_is_422_too_large(anon, worker, cml_untouched):
    from apps.workers.cml.topology_policy import YAML_MAX_ITEMS

    session_id = create(anon)["session_id"]
    many = b"nodes: []\nx: [" + b",".join([b"a"] * YAML_MAX_ITEMS) + b"]\n"  # ~200 KB: under TOPOLOGY_MAX_BYTES

    body = refused(acquire(anon, session_id, topology=many), "too_large")

    assert f"more than {YAML_MAX_ITEMS} YAML items" in body["detail"]
