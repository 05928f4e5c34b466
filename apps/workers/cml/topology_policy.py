"""The topology policy: what a CML topology may ask for before LabManager imports it as the CML admin
(security issue 19, item 7; docs/security.md#topologies).

Every path a topology takes to CML is checked here, with the one function `topology_check`:
a lablet definition's create, update and sync (apps.lablets.services.definitions), the import of an
instance's lab (apps.lablets.engine.instantiate, again: defence in depth) and a remote-lab session's
upload (apps.sessions.services.labs, never trusted).

The rules, each a `rule` name of a violation:
- `malformed`: not YAML (or JSON), not a mapping, `nodes` not a list, a node without `node_definition`,
  `cpus`/`ram` not whole numbers >= 0;
- `external_connector`: a node that bridges out of the lab (CML's external connector: NAT or a bridge into
  the worker's network), unless the topology is `trusted` (a definition an admin marked so);
- `node_definition`: a node definition outside `TOPOLOGY_ALLOWED_NODE_DEFINITIONS`;
- `max_nodes`, `max_cpus`, `max_memory_mb`: the topology's totals over `TOPOLOGY_MAX_NODES`,
  `TOPOLOGY_MAX_CPUS` and `TOPOLOGY_MAX_MEMORY_MB` (0: no limit); a node without `cpus` or `ram` counts
  its node definition's default (`NODE_DEFAULTS`).

Pure: text and settings in, a summary or `TopologyRefused` (a 422 problem+json naming the nodes) out.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from django.conf import settings

from apps.core.errors import ValidationFailed

# Node definitions that connect a lab to networks outside it.
BRIDGING_NODE_DEFINITIONS = frozenset({"external_connector"})
# (cpus, ram MB) CML gives a node of these definitions that names none itself.
NODE_DEFAULTS = {
    "iosv": (1, 512), "iosvl2": (1, 768), "iol-xe": (1, 1024), "ioll2-xe": (1, 1024), "csr1000v": (1, 3072),
    "cat8000v": (1, 4096), "iosxrv9000": (4, 20480), "nxosv9000": (2, 8192), "asav": (1, 2048),
    "alpine": (1, 512), "ubuntu": (1, 2048), "server": (1, 256), "desktop": (1, 1024), "trex": (4, 4096),
    "wan_emulator": (1, 512), "unmanaged_switch": (0, 0), "external_connector": (0, 0),
}
UNKNOWN_DEFAULTS = (1, 1024)
LABEL_MAX = 80  # characters of a node's label or id quoted back


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str
    node_id: str | None = None
    node_label: str | None = None

    def as_dict(self) -> dict:
        node = None if self.node_id is None and self.node_label is None else {"id": self.node_id,
                                                                              "label": self.node_label}
        return {"node": node, "rule": self.rule, "detail": self.detail}


@dataclass(frozen=True)
class TopologySummary:
    nodes: int
    cpus: int
    memory_mb: int
    node_definitions: frozenset[str]


class TopologyRefused(ValidationFailed):
    """422: `detail` names the first violation (its node's label and id, and the rule); `errors[field]` has
    one line per violation; the extension member `violations` lists them as {node: {id, label}, rule, detail}."""

    def __init__(self, violations: list[Violation], *, field: str):
        first = violations[0]
        more = f" (and {len(violations) - 1} more violation(s))" if len(violations) > 1 else ""
        super().__init__(f"The topology is refused ({first.rule}): {first.detail}{more}",
                         errors={field: [v.detail for v in violations]},
                         extra={"violations": [v.as_dict() for v in violations]})
        self.violations = violations


def _quoted(value) -> str:
    text = str(value)
    return text if len(text) <= LABEL_MAX else text[:LABEL_MAX] + "…"


def topology_parse(text: str, *, field: str = "topology"):
    """The topology as data: a mapping, or TopologyRefused (rule `malformed`)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TopologyRefused([Violation("malformed", f"Invalid YAML{where}: {getattr(exc, 'problem', exc)}")],
                              field=field) from None
    if not isinstance(parsed, dict):
        raise TopologyRefused([Violation("malformed", "Expected a mapping at the top level.")], field=field)
    return parsed


def _whole(node_name: str, key: str, value, default: int, node: dict) -> tuple[int, Violation | None]:
    if value is None:
        return default, None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0, Violation("malformed", f"{node_name}: {key} must be a whole number >= 0, not {_quoted(value)!r}.",
                            **node)
    return value, None


def topology_check(text: str, *, trusted: bool = False, field: str = "topology") -> TopologySummary:
    """Check a CML topology against the policy; every violation is reported at once (TopologyRefused)."""
    parsed = topology_parse(text, field=field)
    nodes = parsed.get("nodes")
    if nodes is None:
        nodes = []
    if not isinstance(nodes, list):
        raise TopologyRefused([Violation("malformed", "nodes must be a list of nodes.")], field=field)
    allowed = {name.strip() for name in settings.TOPOLOGY_ALLOWED_NODE_DEFINITIONS if name.strip()}
    violations: list[Violation] = []
    cpus = memory = 0
    definitions = set()
    for index, raw in enumerate(nodes):
        if not isinstance(raw, dict):
            violations.append(Violation("malformed", f"nodes[{index}] is not a mapping (a node)."))
            continue
        node = {"node_id": _quoted(raw.get("id", f"nodes[{index}]")), "node_label": _quoted(raw.get("label", ""))}
        name = f"node '{node['node_label']}' (id {node['node_id']})"
        definition = raw.get("node_definition")
        if not isinstance(definition, str) or not definition:
            violations.append(Violation("malformed", f"{name} has no node_definition.", **node))
            continue
        definitions.add(definition)
        if definition in BRIDGING_NODE_DEFINITIONS:
            if not trusted:
                violations.append(Violation(
                    "external_connector",
                    f"{name} is an external connector ('{_quoted(definition)}'): it bridges the lab into the "
                    "worker's networks, which only a lablet definition an admin marked trusted may do.", **node))
        elif definition not in allowed:
            violations.append(Violation(
                "node_definition",
                f"{name} uses node definition '{_quoted(definition)}', which is not allowed here "
                "(TOPOLOGY_ALLOWED_NODE_DEFINITIONS).", **node))
        default_cpus, default_ram = NODE_DEFAULTS.get(definition, UNKNOWN_DEFAULTS)
        node_cpus, bad_cpus = _whole(name, "cpus", raw.get("cpus"), default_cpus, node)
        node_ram, bad_ram = _whole(name, "ram", raw.get("ram"), default_ram, node)
        violations.extend(v for v in (bad_cpus, bad_ram) if v)
        cpus += node_cpus
        memory += node_ram
    for rule, total, limit, what in (
        ("max_nodes", len(nodes), settings.TOPOLOGY_MAX_NODES, "node(s)"),
        ("max_cpus", cpus, settings.TOPOLOGY_MAX_CPUS, "CPU(s)"),
        ("max_memory_mb", memory, settings.TOPOLOGY_MAX_MEMORY_MB, "MB of memory"),
    ):
        if limit and total > limit:
            violations.append(Violation(rule, f"The topology asks for {total} {what}; at most {limit} are allowed "
                                              f"(TOPOLOGY_{rule.upper()})."))
    if violations:
        raise TopologyRefused(violations, field=field)
    return TopologySummary(nodes=len(nodes), cpus=cpus, memory_mb=memory, node_definitions=frozenset(definitions))
