"""The JSON shapes CML answers with, built from the simulator's model."""

from __future__ import annotations

from .controller import CmlController
from .model import (
    ACTIVE_STATES,
    EXPORT_SCHEMA_VERSION,
    NODE_DEFAULTS,
    Interface,
    Lab,
    Link,
    Node,
)

_ELEMENT_STATE = {"BOOTED": "STARTED", "QUEUED": "STARTED"}  # interfaces and links have no BOOTED


def element_state(node: Node) -> str:
    return _ELEMENT_STATE.get(node.state, node.state)


def node_json(ctl: CmlController, lab: Lab, node: Node, *, configurations: bool = True, interfaces: bool = False,
              operational: bool = False) -> dict:
    data = {"id": node.id, "lab_id": lab.id, "label": node.label, "node_definition": node.node_definition,
            **NODE_DEFAULTS, "priority": None, "pinned_compute_id": None, "resource_pool": None}
    data.update(node.attrs)
    if configurations:
        data["configuration"] = node.attrs.get("configuration")
    else:
        data.pop("configuration", None)
    data["state"] = node.state
    data["boot_progress"] = {"BOOTED": "Booted", "STARTED": "Booting"}.get(node.state, "Not running")
    if interfaces:
        data["interfaces"] = [interface_json(lab, node, iface, nested=True) for iface in node.interfaces]
    if operational:
        active = node.state in ACTIVE_STATES
        data["operational"] = {
            "compute_id": ctl.compute_id if active else None, "cpus": node.cpus, "ram": node.ram_mb,
            "image_definition": node.attrs.get("image_definition") or f"{node.node_definition}-default",
            "resource_pool": None, "vnc_key": None, "iol_app_id": None,
            "serial_consoles": ([{"console_key": node.console_key, "device_number": 0, "label": "Console"}]
                                if active else []),
        }
    return data


def interface_json(lab: Lab, node: Node, iface: Interface, *, nested: bool) -> dict:
    data = {"id": iface.id, "label": iface.label, "type": iface.type, "mac_address": iface.mac_address}
    if iface.slot is not None:
        data["slot"] = iface.slot
    if not nested:
        connected = any(iface.id in (link.interface_a, link.interface_b) for link in lab.links)
        data.update(lab_id=lab.id, node=node.id, state=element_state(node), is_connected=connected, operational={})
    return data


def link_json(lab: Lab, link: Link, *, nested: bool) -> dict:
    data = {"id": link.id, "interface_a": link.interface_a, "interface_b": link.interface_b,
            "node_a": link.node_a, "node_b": link.node_b, "label": link.label}
    if not nested:
        data.update(lab_id=lab.id, state=element_state(lab.node(link.node_a)), link_capture_key=None)
    return data


def lab_json(ctl: CmlController, lab: Lab) -> dict:
    return {
        "id": lab.id, "state": lab.state, "created": lab.created, "modified": lab.modified,
        "lab_title": lab.title, "lab_description": lab.description, "lab_notes": lab.notes,
        "owner": ctl.user_id, "owner_username": ctl.username, "owner_fullname": "",
        "node_count": len(lab.nodes), "link_count": len(lab.links), "groups": [],
        "effective_permissions": ["lab_admin", "lab_edit", "lab_exec", "lab_view"],
        "autostart": {"enabled": False, "priority": None, "delay": None},
        "node_staging": {"enabled": False, "start_remaining": True, "abort_on_failure": False},
    }


def topology_json(ctl: CmlController, lab: Lab, *, configurations: bool) -> dict:
    """GET labs/{id}/topology: what virl2-client builds its Lab, Node, Interface and Link objects from."""
    return {
        "lab": {"title": lab.title, "description": lab.description, "notes": lab.notes, "owner": ctl.user_id,
                "version": EXPORT_SCHEMA_VERSION},
        "nodes": [node_json(ctl, lab, n, configurations=configurations, interfaces=True) for n in lab.nodes],
        "links": [link_json(lab, link, nested=True) for link in lab.links],
        "annotations": lab.extra.get("annotations", []),
        "smart_annotations": lab.extra.get("smart_annotations", []),
    }
