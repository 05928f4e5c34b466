"""The simulated controller's data: labs, nodes, interfaces, links; topology YAML in and out."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import yaml

ACTIVE_STATES = frozenset({"STARTED", "QUEUED", "BOOTED"})
BOOTING_STATES = frozenset({"STARTED", "QUEUED"})
# CML does not count these against the licensed node limit.
UNCOUNTED_DEFINITIONS = frozenset({"external_connector", "unmanaged_switch"})
DEFAULT_RAM_MB = {
    "iosv": 512, "iosvl2": 768, "csr1000v": 3072, "cat8000v": 4096, "iosxrv9000": 20480,
    "nxosv9000": 8192, "asav": 2048, "alpine": 512, "ubuntu": 2048, "server": 256,
    "desktop": 1024, "external_connector": 0, "unmanaged_switch": 0,
}
EXPORT_SCHEMA_VERSION = "0.3.0"
NODE_DEFAULTS = {
    "x": 0, "y": 0, "boot_disk_size": None, "configuration": None, "cpu_limit": None, "cpus": None,
    "data_volume": None, "hide_links": False, "image_definition": None, "parameters": {}, "ram": None, "tags": [],
}


class _NoContent:
    def __repr__(self):
        return "NO_CONTENT"


NO_CONTENT = _NoContent()  # a handler's answer for 204 No Content


@dataclass
class Text:
    """A handler's non-JSON answer."""

    text: str
    content_type: str = "application/x-yaml"


class SimError(Exception):
    """An error answer in CML's shape: {"code": status, "description": ...}."""

    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass
class Faults:
    down: bool = False
    down_mode: str = "http_503"  # "drop": close the connection without answering
    slow: float = 0.0  # seconds added to every /api/v0 request
    license_expired: bool = False
    auth_fail: bool = False


@dataclass
class Interface:
    id: str
    label: str
    type: str = "physical"
    slot: int | None = None
    mac_address: str | None = None


@dataclass
class Node:
    id: str
    label: str
    node_definition: str
    attrs: dict  # every other field of the topology (x, y, configuration, ram, tags, ...)
    interfaces: list[Interface] = field(default_factory=list)
    state: str = "DEFINED_ON_CORE"
    boot_at: float = 0.0  # time.monotonic() at which STARTED becomes BOOTED
    console_key: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def counted(self) -> bool:
        return self.node_definition not in UNCOUNTED_DEFINITIONS

    @property
    def ram_mb(self) -> int:
        return self.attrs.get("ram") or DEFAULT_RAM_MB.get(self.node_definition, 1024)

    @property
    def cpus(self) -> int:
        return self.attrs.get("cpus") or (1 if self.counted else 0)


@dataclass
class Link:
    id: str
    interface_a: str
    interface_b: str
    node_a: str
    node_b: str
    label: str
    attrs: dict = field(default_factory=dict)


@dataclass
class Lab:
    id: str
    title: str
    description: str
    notes: str
    nodes: list[Node]
    links: list[Link]
    extra: dict  # annotations, smart_annotations: kept for the export
    created: str
    modified: str

    @property
    def state(self) -> str:
        states = [node.state for node in self.nodes]
        if any(state in ACTIVE_STATES for state in states):
            return "BOOTED" if all(state == "BOOTED" for state in states) else "STARTED"
        if any(state == "STOPPED" for state in states):
            return "STOPPED"
        return "DEFINED_ON_CORE"

    def tick(self) -> None:
        """Nodes whose boot time has come are BOOTED."""
        now = time.monotonic()
        for node in self.nodes:
            if node.state in BOOTING_STATES and now >= node.boot_at:
                node.state = "BOOTED"

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise SimError(404, f"Node not found: {node_id}")


def now_iso(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="seconds")


def parse_topology(text: str, title: str | None) -> tuple[Lab, list[str]]:
    """A CML topology YAML as a new Lab with fresh uuids, plus import warnings. SimError 400 if invalid."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SimError(400, f"Invalid topology: the YAML does not parse ({exc.__class__.__name__}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes", []), list):
        raise SimError(400, "Invalid topology: expected a mapping with a list of nodes.")
    meta = data.get("lab") or {}
    warnings, nodes, ends, seen = [], [], {}, set()
    for raw in data.get("nodes") or []:
        if not isinstance(raw, dict) or not all(raw.get(key) for key in ("id", "label", "node_definition")):
            raise SimError(400, "Invalid topology: every node needs an id, a label and a node_definition.")
        if raw["id"] in seen:
            raise SimError(400, f"Invalid topology: duplicate node id {raw['id']}.")
        seen.add(raw["id"])
        if raw["node_definition"] not in DEFAULT_RAM_MB:
            warnings.append(f"Node definition '{raw['node_definition']}' is not known to this simulator.")
        skip = ("id", "label", "node_definition", "interfaces", "state")
        node = Node(id=str(uuid.uuid4()), label=str(raw["label"]), node_definition=raw["node_definition"],
                    attrs={k: v for k, v in raw.items() if k not in skip})
        for iraw in raw.get("interfaces") or []:
            if not isinstance(iraw, dict) or not iraw.get("id") or not iraw.get("label"):
                raise SimError(400, f"Invalid topology: an interface of node {raw['id']} lacks an id or a label.")
            iface = Interface(id=str(uuid.uuid4()), label=str(iraw["label"]), type=iraw.get("type", "physical"),
                              slot=iraw.get("slot"), mac_address=iraw.get("mac_address"))
            node.interfaces.append(iface)
            ends[(raw["id"], iraw["id"])] = (node, iface)
        nodes.append(node)
    links = []
    for raw in data.get("links") or []:
        try:
            node_a, iface_a = ends[(raw["n1"], raw["i1"])]
            node_b, iface_b = ends[(raw["n2"], raw["i2"])]
        except (KeyError, TypeError):
            name = raw.get("id") if isinstance(raw, dict) else raw
            raise SimError(400, f"Invalid topology: link {name!r} refers to an unknown node or interface.") from None
        skip = ("id", "n1", "n2", "i1", "i2", "label")
        label = raw.get("label") or f"{node_a.label}-{iface_a.label}<->{node_b.label}-{iface_b.label}"
        links.append(Link(
            id=str(uuid.uuid4()), interface_a=iface_a.id, interface_b=iface_b.id, node_a=node_a.id,
            node_b=node_b.id, label=label, attrs={k: v for k, v in raw.items() if k not in skip},
        ))
    now = now_iso()
    lab = Lab(
        id=str(uuid.uuid4()), title=title or meta.get("title") or f"Lab at {time.strftime('%a %H:%M')}",
        description=meta.get("description") or "", notes=meta.get("notes") or "", nodes=nodes, links=links,
        extra={k: data[k] for k in ("annotations", "smart_annotations") if data.get(k)}, created=now, modified=now,
    )
    return lab, warnings


def export_topology(lab: Lab) -> str:
    """The lab as CML exports it: ids renumbered n0.., i0.. per node, l0..; schema 0.3.0."""
    node_ids, iface_ids, nodes = {}, {}, []
    for index, node in enumerate(lab.nodes):
        node_ids[node.id] = f"n{index}"
        interfaces = []
        for number, iface in enumerate(node.interfaces):
            iface_ids[iface.id] = f"i{number}"
            slot = {} if iface.slot is None else {"slot": iface.slot}
            interfaces.append({"id": f"i{number}", "label": iface.label, **slot, "type": iface.type})
        nodes.append({"id": f"n{index}", "label": node.label, "node_definition": node.node_definition,
                      **NODE_DEFAULTS, **node.attrs, "interfaces": interfaces})
    links = [{"id": f"l{index}", "n1": node_ids[link.node_a], "n2": node_ids[link.node_b],
              "i1": iface_ids[link.interface_a], "i2": iface_ids[link.interface_b], "label": link.label,
              **link.attrs} for index, link in enumerate(lab.links)]
    document = {
        "annotations": lab.extra.get("annotations", []),
        "smart_annotations": lab.extra.get("smart_annotations", []),
        "nodes": nodes,
        "links": links,
        "lab": {"description": lab.description, "notes": lab.notes, "title": lab.title,
                "version": EXPORT_SCHEMA_VERSION},
    }
    return yaml.dump(document, Dumper=_ExportDumper, sort_keys=False, default_flow_style=False)


class _ExportDumper(yaml.SafeDumper):
    """CML writes each node's fields out in full: never PyYAML's anchors and aliases for the defaults the
    nodes share (LabManager's topology policy refuses them)."""

    def ignore_aliases(self, data):
        return True
