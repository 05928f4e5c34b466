"""The topology policy: what a CML topology may ask for before LabManager imports it as the CML admin
(security issue 19, item 7; docs/security.md#topologies).

Every path a topology takes to CML is checked here, with the one function `topology_check`:
a lablet definition's create, update and sync (apps.lablets.services.definitions), the import of an
instance's lab (apps.lablets.engine.instantiate, again: defence in depth) and a remote-lab session's
upload (apps.sessions.services.labs, never trusted).

The rules, each a `rule` name of a violation:
- `too_large`: the text is over `TOPOLOGY_MAX_BYTES` (UTF-8), refused before it is parsed, or holds more than
  `YAML_MAX_ITEMS` YAML items (refused at the first one over);
- `malformed`: not YAML (or JSON), YAML anchors or aliases (`&a`, `*a`: shared references that expand when
  read), not a mapping, `nodes` not a list, a node without `node_definition`, a node's `id`/`label` neither a
  string nor a whole number, `cpus`/`ram`/`data_volume`/`boot_disk_size` not whole numbers >= 0;
- `external_connector`: a node that bridges out of the lab (CML's external connector: NAT or a bridge into
  the worker's network), unless the topology is `trusted` (a definition an admin marked so);
- `node_definition`: a node definition outside `TOPOLOGY_ALLOWED_NODE_DEFINITIONS`;
- `max_nodes`, `max_cpus`, `max_memory_mb`, `max_disk_gb`: the topology's totals over `TOPOLOGY_MAX_NODES`,
  `TOPOLOGY_MAX_CPUS`, `TOPOLOGY_MAX_MEMORY_MB` and `TOPOLOGY_MAX_DISK_GB` (0: no limit); a node without `cpus`
  or `ram` counts its node definition's default (`NODE_DEFAULTS`); disk is the sum of the nodes' `data_volume`
  and `boot_disk_size` (GiB; a node without them counts 0: its image's own disk).

Parsing uses libyaml (yaml.CSafeLoader's parser) when PyYAML has it, with the pure-Python composer on top: it
refuses anchors and aliases at the first one (`_NoAliasComposer`).

Pure: text and settings in, a summary or `TopologyRefused` (a 422 problem+json naming the nodes) out.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from django.conf import settings
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

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
    disk_gb: int
    node_definitions: frozenset[str]


class TopologyRefused(ValidationFailed):
    """422: `detail` names the first violation (its node's label and id, and the rule); `errors[field]` has
    one line per violation; the extension member `violations` lists them as {node: {id, label}, rule, detail}."""

    code = "topology_refused"

    def __init__(self, violations: list[Violation], *, field: str):
        first = violations[0]
        more = f" (and {len(violations) - 1} more violation(s))" if len(violations) > 1 else ""
        super().__init__(f"The topology is refused ({first.rule}): {first.detail}{more}",
                         errors={field: [v.detail for v in violations]},
                         extra={"violations": [v.as_dict() for v in violations]})
        self.violations = violations


def _quoted(value) -> str:
    """A short quote of a string or whole number; anything else is named by its type, never turned into text
    (a structure can be large)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"<{type(value).__name__}>"
    text = value[:LABEL_MAX + 1] if isinstance(value, str) else str(value)
    return text if len(text) <= LABEL_MAX else text[:LABEL_MAX] + "…"


NO_ALIASES = "YAML anchors and aliases (&name, *name) are not allowed in a topology"
# YAML items (scalars, lists, mappings) in one topology: a 40-node lab with configurations and links has ~10,000;
# reading 100,000 takes about a second in the request's thread (TOPOLOGY_MAX_BYTES of one-character items: ~5 s).
YAML_MAX_ITEMS = 100_000


class _TooManyItems(Exception):
    pass


class _NoAliasComposer(Composer):
    """The composer, refusing anchors and aliases (an alias is a shared reference that code reading the data
    expands: seven nested levels of ten make ten million items out of 400 bytes) and more than YAML_MAX_ITEMS
    items, each at the first one."""

    items = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, NO_ALIASES, event.start_mark)
        self.items += 1
        if self.items > YAML_MAX_ITEMS:
            raise _TooManyItems
        return super().compose_node(parent, index)


class _PyLoader(_NoAliasComposer, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with the composer above (slow: only when libyaml is missing)."""


_Loader: type = _PyLoader
if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _CLoader(CParser, _NoAliasComposer, SafeConstructor, Resolver):
        """libyaml's scanner and parser (fast), the composer above (CParser's own composes aliases in C)."""

        get_single_node = _NoAliasComposer.get_single_node
        get_node = _NoAliasComposer.get_node
        check_node = _NoAliasComposer.check_node

        def __init__(self, stream):
            CParser.__init__(self, stream)
            _NoAliasComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _Loader = _CLoader


def _where(mark, text: str) -> str:
    lines = text.count("\n") + 1
    if mark.line >= lines:  # libyaml puts the end of a text without a final newline on the line after it
        last_line_length = len(text) - text.rfind("\n") - 1
        return f"line {lines}, column {last_line_length + 1}"
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """`Invalid YAML at line L, column C: problem (while parsing ... at line L, column C)`: an unclosed
    bracket's problem is where the text ends, the context says where it opened."""
    mark, context, context_mark = (getattr(exc, name, None) for name in ("problem_mark", "context", "context_mark"))
    message = f"Invalid YAML{f' at {_where(mark, text)}' if mark else ''}: {getattr(exc, 'problem', None) or exc}"
    if context and context_mark:
        message += f" ({context} at {_where(context_mark, text)})"
    return message


def topology_parse(text: str, *, field: str = "topology"):
    """The topology as data: a mapping, or TopologyRefused (rule `too_large`: over TOPOLOGY_MAX_BYTES, checked
    before parsing, or over YAML_MAX_ITEMS; `malformed`)."""
    limit = settings.TOPOLOGY_MAX_BYTES
    size = len(text.encode("utf-8"))
    if limit and size > limit:
        raise TopologyRefused([Violation("too_large", f"The topology is {size} bytes; at most {limit} bytes are "
                                                      "allowed (TOPOLOGY_MAX_BYTES).")], field=field)
    try:
        parsed = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (SafeConstructor)
    except yaml.YAMLError as exc:
        raise TopologyRefused([Violation("malformed", _yaml_problem(exc, text))], field=field) from None
    except _TooManyItems:
        raise TopologyRefused([Violation("too_large", f"The topology has more than {YAML_MAX_ITEMS} YAML items "
                                                      "(values, lists and mappings).")], field=field) from None
    except (ValueError, RecursionError) as exc:  # a value its type refuses (a date, a huge int); deep nesting
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise TopologyRefused([Violation("malformed", f"Invalid YAML: {problem}")], field=field) from None
    if not isinstance(parsed, dict):
        raise TopologyRefused([Violation("malformed", "Expected a mapping at the top level.")], field=field)
    return parsed


def _plain(value) -> bool:
    """A node's id or label: a string or a whole number (YAML reads `id: 1` as a number)."""
    return isinstance(value, (str, int)) and not isinstance(value, bool)


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
    cpus = memory = disk = 0
    definitions = set()
    for index, raw in enumerate(nodes):
        if not isinstance(raw, dict):
            violations.append(Violation("malformed", f"nodes[{index}] is not a mapping (a node)."))
            continue
        node = {"node_id": _quoted(raw.get("id", f"nodes[{index}]")), "node_label": _quoted(raw.get("label", ""))}
        name = f"node '{node['node_label']}' (id {node['node_id']})"
        odd = [key for key in ("id", "label") if not _plain(raw.get(key, ""))]
        if odd:
            violations.append(Violation("malformed", f"nodes[{index}]: {' and '.join(odd)} must be a string or a "
                                                     "whole number.", **node))
            continue
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
        node_data, bad_data = _whole(name, "data_volume", raw.get("data_volume"), 0, node)
        node_boot, bad_boot = _whole(name, "boot_disk_size", raw.get("boot_disk_size"), 0, node)
        violations.extend(v for v in (bad_cpus, bad_ram, bad_data, bad_boot) if v)
        cpus += node_cpus
        memory += node_ram
        disk += node_data + node_boot
    for rule, total, limit, what in (
        ("max_nodes", len(nodes), settings.TOPOLOGY_MAX_NODES, "node(s)"),
        ("max_cpus", cpus, settings.TOPOLOGY_MAX_CPUS, "CPU(s)"),
        ("max_memory_mb", memory, settings.TOPOLOGY_MAX_MEMORY_MB, "MB of memory"),
        ("max_disk_gb", disk, settings.TOPOLOGY_MAX_DISK_GB, "GiB of disk (data_volume + boot_disk_size)"),
    ):
        if limit and total > limit:
            violations.append(Violation(rule, f"The topology asks for {total} {what}; at most {limit} are allowed "
                                              f"(TOPOLOGY_{rule.upper()})."))
    if violations:
        raise TopologyRefused(violations, field=field)
    return TopologySummary(nodes=len(nodes), cpus=cpus, memory_mb=memory, disk_gb=disk,
                           node_definitions=frozenset(definitions))
