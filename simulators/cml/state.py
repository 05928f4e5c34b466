"""The simulated controller's state in a JSON file, so that `make run` survives its own restart
(`python -m simulators.cml --state-file var/sim/cml.json`).

What is kept: the labs with their ids, topology (nodes, interfaces, links) and node states, the login tokens,
the host's ids and the licence registration. A node that was BOOTED comes back BOOTED (its PATty consoles
open again on start); one still booting finishes the rest of its boot delay. What is not kept: faults and
the run-time configuration (`/_sim/config`): the command line sets those on every start.

The file is written after every request that may change something (anything but GET, and the /_sim control
calls) and on stop, atomically (a new file, then a rename). A file that does not parse starts the simulator
empty, with a warning. Delete it to start empty.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from .controller import CmlController
from .model import BOOTING_STATES, Interface, Lab, Link, Node

FORMAT = 1


def state_dump(controller: CmlController) -> dict:
    """The state to keep, as JSON-ready data. Callers hold the controller's lock."""
    now = time.monotonic()
    labs = []
    for lab in controller.labs.values():
        lab.tick()
        data = asdict(lab)
        for node, raw in zip(lab.nodes, data["nodes"], strict=True):
            raw["boot_in"] = max(0.0, node.boot_at - now) if node.state in BOOTING_STATES else 0.0
            del raw["boot_at"]  # a monotonic clock reading: meaningless in the next process
        labs.append(data)
    return {
        "format": FORMAT,
        "ids": {"user_id": controller.user_id, "compute_id": controller.compute_id,
                "product_uuid": controller.product_uuid},
        "tokens": sorted(controller.tokens),
        "licence": {"tier": controller.license_tier, "registration": controller.registration,
                    "registration_failure": controller.registration_failure,
                    "registered_at": controller.registered_at},
        "labs": labs,
    }


def state_load(controller: CmlController, data: dict) -> None:
    """Replace the controller's labs, tokens, ids and licence with `data` (from state_dump)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown state format {data.get('format')!r}")
    now = time.monotonic()
    labs = {}
    for raw in data["labs"]:
        nodes = []
        for node in raw["nodes"]:
            node = dict(node)
            boot_in = node.pop("boot_in", 0.0)
            interfaces = [Interface(**iface) for iface in node.pop("interfaces")]
            nodes.append(Node(**node, interfaces=interfaces, boot_at=now + boot_in))
        links = [Link(**link) for link in raw["links"]]
        lab = Lab(**{**raw, "nodes": nodes, "links": links})
        labs[lab.id] = lab
    with controller.lock:
        controller.labs = labs
        controller.tokens = set(data["tokens"])
        controller.user_id = data["ids"]["user_id"]
        controller.compute_id = data["ids"]["compute_id"]
        controller.product_uuid = data["ids"]["product_uuid"]
        licence = data["licence"]
        controller.license_tier = licence["tier"]
        controller.registration = licence["registration"]
        controller.registration_failure = licence["registration_failure"]
        controller.registered_at = licence["registered_at"]


def state_write(controller: CmlController, path: Path) -> None:
    data = json.dumps(state_dump(controller), indent=1).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def state_read(controller: CmlController, path: Path) -> bool:
    """Load the file into the controller; False if there is none."""
    if not path.exists():
        return False
    state_load(controller, json.loads(path.read_text()))
    return True
