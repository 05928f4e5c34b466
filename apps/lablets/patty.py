"""CML PATty: a node's console (or a TCP service of it) on a TCP port of the CML controller, asked for by a
node tag. LabManager tags the device each port definition names with the port it allocated, in the topology
sent to CML at instantiation (the stored definition is never changed). Tag syntax (CML 2.6+ PATty, docs/workers.md):

- `serial:<outside-port>` (console line 0), `serial:<outside-port>:<line>`;
- `vnc:<outside-port>`;
- `pat:tcp:<outside-port>:<inside-port>` (needs the node on an external connector to the NAT bridge).

Pure functions: no database, no network.
"""

from __future__ import annotations

import yaml

from apps.workers.cml.topology_policy import topology_parse

# console_type -> how PATty exposes it. serial and telnet are the device's console line 0.
SERIAL_TYPES = frozenset({"serial", "telnet"})
INSIDE_PORTS = {"ssh": 22, "http": 80, "https": 443}


def patty_tag(spec: dict, port: int) -> str:
    """The PATty tag for one port definition (`console_type`, optional device `port`) at `port`."""
    kind = spec.get("console_type") or "serial"
    if kind in SERIAL_TYPES:
        return f"serial:{port}"
    if kind == "vnc":
        return f"vnc:{port}"
    return f"pat:tcp:{port}:{spec.get('port') or INSIDE_PORTS.get(kind, 22)}"


def node_labels(text: str) -> set[str]:
    """The labels of the topology's nodes (the names port definitions use as `device_name`)."""
    parsed = topology_parse(text, field="cml_lab_yaml")
    return {str(node.get("label")) for node in parsed.get("nodes") or [] if isinstance(node, dict)}


def port_definition_errors(text: str, port_definitions: list[dict]) -> list[str]:
    """One message per port definition whose `device_name` is not a node label of the topology."""
    labels = node_labels(text)
    return [f"port_definitions[{index}] ('{spec.get('name')}'): device '{spec.get('device_name')}' is not a node "
            f"of the topology (nodes: {', '.join(sorted(labels)) or 'none'})."
            for index, spec in enumerate(port_definitions or []) if str(spec.get("device_name")) not in labels]


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # written out in full, as CML's own exports are
        return True


def topology_with_console_tags(text: str, *, port_definitions: list[dict], ports: list[dict]) -> str:
    """The topology with each port definition's device tagged for PATty with its allocated port.

    `ports` are the held ports [{name, port}] (apps.lablets.services.ports); a definition without a port (none
    held) or whose device is missing adds nothing. Tags already on a node are kept; without port definitions
    the text is returned unchanged."""
    if not port_definitions or not ports:
        return text
    parsed = topology_parse(text, field="cml_lab_yaml")
    held: dict[str, list[int]] = {}
    for entry in ports:
        held.setdefault(entry["name"], []).append(entry["port"])
    by_label = {str(node.get("label")): node for node in parsed.get("nodes") or [] if isinstance(node, dict)}
    for spec in port_definitions:
        node = by_label.get(str(spec.get("device_name")))
        allocated = held.get(spec.get("name")) or []
        if node is None or not allocated:
            continue
        tag = patty_tag(spec, allocated.pop(0))
        tags = list(node.get("tags") or [])
        if tag not in tags:
            tags.append(tag)
        node["tags"] = tags
    return yaml.dump(parsed, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
