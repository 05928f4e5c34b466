"""API handlers: labs and nodes (same calling convention as api_system)."""

from __future__ import annotations

import uuid

from . import shapes
from .controller import CmlController
from .model import (
    ACTIVE_STATES,
    BOOTING_STATES,
    NO_CONTENT,
    SimError,
    Text,
    export_topology,
    now_iso,
    parse_topology,
)


def _flag(query: dict, name: str) -> bool:
    return query.get(name, "false").lower() == "true"


def lab_import(ctl: CmlController, *, body, query, **_):
    lab, warnings = parse_topology(body.decode("utf-8", "replace"), query.get("title"))
    ctl.labs[lab.id] = lab
    return {"id": lab.id, "warnings": warnings}


def lab_list(ctl: CmlController, **_):
    return list(ctl.labs)


def lab_tiles(ctl: CmlController, **_):
    return {"lab_tiles": {lab_id: shapes.lab_json(ctl, ctl.lab(lab_id)) for lab_id in list(ctl.labs)}}


def lab_detail(ctl: CmlController, *, lab, **_):
    return shapes.lab_json(ctl, ctl.lab(lab))


def lab_delete(ctl: CmlController, *, lab, **_):
    if ctl.lab(lab).state != "DEFINED_ON_CORE":
        raise SimError(400, f"Lab {lab} must be stopped and wiped before it can be removed.")
    del ctl.labs[lab]
    return NO_CONTENT


def lab_topology(ctl: CmlController, *, lab, query, **_):
    return shapes.topology_json(ctl, ctl.lab(lab), configurations=not _flag(query, "exclude_configurations"))


def lab_download(ctl: CmlController, *, lab, **_):
    return Text(export_topology(ctl.lab(lab)))


def lab_action(ctl: CmlController, *, lab, action, **_):
    record = ctl.lab(lab)
    if action == "start":
        ctl.start_nodes(record.nodes)
    elif action == "stop":
        for node in record.nodes:
            if node.state in ACTIVE_STATES:
                node.state = "STOPPED"
    else:  # wipe
        if any(node.state in ACTIVE_STATES for node in record.nodes):
            raise SimError(400, f"Lab {lab} is running: stop it before wiping.")
        for node in record.nodes:
            node.state, node.console_key = "DEFINED_ON_CORE", str(uuid.uuid4())
    record.modified = now_iso()
    return NO_CONTENT


def lab_state(ctl: CmlController, *, lab, **_):
    return ctl.lab(lab).state


def lab_converged(ctl: CmlController, *, lab, **_):
    return not any(node.state in BOOTING_STATES for node in ctl.lab(lab).nodes)


def lab_element_state(ctl: CmlController, *, lab, **_):
    record = ctl.lab(lab)
    return {
        "nodes": {n.id: n.state for n in record.nodes},
        "interfaces": {i.id: shapes.element_state(n) for n in record.nodes for i in n.interfaces},
        "links": {link.id: shapes.element_state(record.node(link.node_a)) for link in record.links},
    }


def lab_simulation_stats(ctl: CmlController, *, lab, **_):
    record = ctl.lab(lab)
    if record.state != "BOOTED":
        raise SimError(409, f"Lab {lab} is not running: no simulation statistics.")
    return {
        "nodes": {n.id: {"cpu_usage": 4.0, "block0_rd_bytes": 1 << 20, "block0_wr_bytes": 1 << 18}
                  for n in record.nodes},
        "links": {link.id: {"readbytes": 1200, "readpackets": 12, "writebytes": 900, "writepackets": 9}
                  for link in record.links},
    }


def lab_nodes(ctl: CmlController, *, lab, query, **_):
    record = ctl.lab(lab)
    if not _flag(query, "data"):
        return [n.id for n in record.nodes]
    return [shapes.node_json(ctl, record, n, configurations=not _flag(query, "exclude_configurations"),
                             interfaces=_flag(query, "populate_interfaces"), operational=_flag(query, "operational"))
            for n in record.nodes]


def lab_links(ctl: CmlController, *, lab, query, **_):
    record = ctl.lab(lab)
    if not _flag(query, "data"):
        return [link.id for link in record.links]
    return [shapes.link_json(record, link, nested=False) for link in record.links]


def lab_interfaces(ctl: CmlController, *, lab, **_):
    # virl2-client 2.10 reads objects (with "operational") here, not a list of ids.
    record = ctl.lab(lab)
    return [shapes.interface_json(record, n, i, nested=False) for n in record.nodes for i in n.interfaces]


def lab_empty_dict(ctl: CmlController, *, lab, **_):
    ctl.lab(lab)
    return {}


def lab_empty_list(ctl: CmlController, *, lab, **_):
    ctl.lab(lab)
    return []


def node_detail(ctl: CmlController, *, lab, node, query, **_):
    record = ctl.lab(lab)
    return shapes.node_json(ctl, record, record.node(node), configurations=not _flag(query, "exclude_configurations"),
                            operational=_flag(query, "operational"))


def node_state(ctl: CmlController, *, lab, node, **_):
    return {"id": node, "state": ctl.lab(lab).node(node).state}


def node_action(ctl: CmlController, *, lab, node, action, **_):
    target = ctl.lab(lab).node(node)
    if action == "start":
        ctl.start_nodes([target])
    elif target.state in ACTIVE_STATES:
        target.state = "STOPPED"
    return NO_CONTENT


def node_converged(ctl: CmlController, *, lab, node, **_):
    return ctl.lab(lab).node(node).state not in BOOTING_STATES


def node_interfaces(ctl: CmlController, *, lab, node, **_):
    record = ctl.lab(lab)
    target = record.node(node)
    return [shapes.interface_json(record, target, i, nested=False) for i in target.interfaces]


def node_console_key(ctl: CmlController, *, lab, node, query, **_):
    target = ctl.lab(lab).node(node)
    if target.state not in ACTIVE_STATES:
        raise SimError(400, f"Node {node} is not running: no console available.")
    if query.get("line", "0") not in ("0", ""):
        raise SimError(404, f"Node {node} has no console line {query['line']}.")
    return target.console_key


def node_extract_configuration(ctl: CmlController, *, lab, node, **_):
    target = ctl.lab(lab).node(node)
    if target.state != "BOOTED":
        raise SimError(400, f"Node {node} must be booted to extract its configuration.")
    extracted = f"! extracted by the CML simulator at {now_iso()}\nhostname {target.label}\n!\nend\n"
    current = target.attrs.get("configuration")
    if isinstance(current, list) and current:  # several configuration files: the first is the main one
        target.attrs["configuration"] = [{**current[0], "content": extracted}, *current[1:]]
    else:
        target.attrs["configuration"] = extracted
    return NO_CONTENT
