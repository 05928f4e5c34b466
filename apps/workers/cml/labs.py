"""Lab operations on one CML controller: import, start, stop, wipe, delete, read, export."""

from __future__ import annotations

import time
from dataclasses import dataclass

from virl2_client.models import Lab

from .client import DEFAULT_TIMEOUT, cml_client
from .errors import CmlError

ACTIVE_NODE_STATES = frozenset({"STARTED", "QUEUED", "BOOTED"})
WAIT_TIMEOUT = 600.0
POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class CmlNodeState:
    id: str
    label: str
    state: str  # DEFINED_ON_CORE, STOPPED, STARTED, QUEUED, BOOTED, DISCONNECTED


@dataclass(frozen=True)
class CmlNode:
    id: str
    label: str
    node_definition: str
    state: str
    console_key: str | None  # only while the node runs
    console_path: str | None  # for CML's console server: `open /<lab>/<node>/<line>`


def cml_convergence_timeout(*, url: str, lab_id: str, wait_timeout: float) -> CmlError:
    """The error of a lab that did not converge in time (for callers that poll `cml_lab_converged` themselves)."""
    return CmlError(f"CML at {url}: lab {lab_id} did not converge within {wait_timeout:g}s", kind=CmlError.TIMEOUT,
                    url=url)


def _wait_converged(lab: Lab, *, url: str, wait_timeout: float, poll_interval: float) -> None:
    deadline = time.monotonic() + wait_timeout
    while not lab.has_converged():
        left = deadline - time.monotonic()
        if left <= 0:
            raise cml_convergence_timeout(url=url, lab_id=lab.id, wait_timeout=wait_timeout)
        time.sleep(min(poll_interval, left))


def cml_lab_import(*, url: str, username: str, password: str, tls_verify: bool = True,
                   topology_yaml: str, title: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT) -> str:
    """Import a CML topology YAML as a new lab; returns the lab id. Invalid YAML -> CmlError(refused)."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        return client.import_lab(topology_yaml, title=title).id


def _lab_action(action: str, *, url, username, password, tls_verify, lab_id, wait, wait_timeout, poll_interval,
                timeout) -> str:
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        lab = client.join_existing_lab(lab_id, sync_lab=False)
        getattr(lab, action)(wait=False)
        if wait:
            _wait_converged(lab, url=url, wait_timeout=wait_timeout, poll_interval=poll_interval)
        return lab.state()


def cml_lab_start(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str, wait: bool = False,
                  wait_timeout: float = WAIT_TIMEOUT, poll_interval: float = POLL_INTERVAL,
                  timeout: float = DEFAULT_TIMEOUT) -> str:
    """Start every node; returns the lab state (STARTED while booting, BOOTED once all nodes are).

    With `wait`, polls until CML reports convergence (CmlError(timeout) after `wait_timeout`).
    A start beyond the host's node capacity or an expired licence raises CmlError(refused).
    """
    return _lab_action("start", url=url, username=username, password=password, tls_verify=tls_verify,
                       lab_id=lab_id, wait=wait,
                       wait_timeout=wait_timeout, poll_interval=poll_interval, timeout=timeout)


def cml_lab_stop(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str, wait: bool = False,
                 wait_timeout: float = WAIT_TIMEOUT, poll_interval: float = POLL_INTERVAL,
                 timeout: float = DEFAULT_TIMEOUT) -> str:
    """Stop every node; returns the lab state (STOPPED)."""
    return _lab_action("stop", url=url, username=username, password=password, tls_verify=tls_verify,
                       lab_id=lab_id, wait=wait,
                       wait_timeout=wait_timeout, poll_interval=poll_interval, timeout=timeout)


def cml_lab_wipe(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str, wait: bool = False,
                 wait_timeout: float = WAIT_TIMEOUT, poll_interval: float = POLL_INTERVAL,
                 timeout: float = DEFAULT_TIMEOUT) -> str:
    """Wipe the nodes' disks (the lab must be stopped, else CmlError(refused)); returns DEFINED_ON_CORE."""
    return _lab_action("wipe", url=url, username=username, password=password, tls_verify=tls_verify,
                       lab_id=lab_id, wait=wait,
                       wait_timeout=wait_timeout, poll_interval=poll_interval, timeout=timeout)


def cml_lab_delete(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str, force: bool = False,
                   missing_ok: bool = False, wait_timeout: float = WAIT_TIMEOUT,
                   poll_interval: float = POLL_INTERVAL, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Remove the lab. CML only removes a stopped and wiped lab: `force` stops and wipes it first.

    `missing_ok` makes the removal of an unknown lab a no-op (for idempotent teardown).
    """
    try:
        with cml_client(url=url, username=username, password=password,
                        tls_verify=tls_verify, timeout=timeout) as client:
            lab = client.join_existing_lab(lab_id, sync_lab=False)
            if force and lab.state() != "DEFINED_ON_CORE":
                for action in (lab.stop, lab.wipe):
                    action(wait=False)
                    _wait_converged(lab, url=url, wait_timeout=wait_timeout, poll_interval=poll_interval)
            lab.remove()
    except CmlError as exc:
        if not (missing_ok and exc.kind == CmlError.NOT_FOUND):
            raise


def cml_lab_converged(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str,
                      timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether every node of the lab reached its target state (one check, no waiting): for callers that
    wait without holding a thread, between `cml_lab_start(wait=False)` and `cml_lab_nodes`."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        return bool(client.join_existing_lab(lab_id, sync_lab=False).has_converged())


def cml_lab_state(*, url: str, username: str, password: str, tls_verify: bool = True,
                  lab_id: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """CML's lab state: DEFINED_ON_CORE, STOPPED, STARTED, QUEUED or BOOTED."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        return client.join_existing_lab(lab_id, sync_lab=False).state()


def cml_lab_node_states(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str,
                        timeout: float = DEFAULT_TIMEOUT) -> list[CmlNodeState]:
    """The state of every node, in topology order."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        lab = client.join_existing_lab(lab_id)
        lab.sync_states()
        return [CmlNodeState(id=node.id, label=node.label, state=node.state) for node in lab.nodes()]


def cml_lab_nodes(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str,
                  timeout: float = DEFAULT_TIMEOUT) -> list[CmlNode]:
    """Every node with its state and, for running nodes, its console key and console-server path."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        lab = client.join_existing_lab(lab_id)
        lab.sync_states()
        nodes = []
        for node in lab.nodes():
            running = node.state in ACTIVE_NODE_STATES
            nodes.append(CmlNode(
                id=node.id,
                label=node.label,
                node_definition=node.node_definition,
                state=node.state,
                console_key=node.console_key() if running else None,
                console_path=f"/{lab_id}/{node.id}/0" if running else None,
            ))
        return nodes


def cml_lab_export_yaml(*, url: str, username: str, password: str, tls_verify: bool = True, lab_id: str,
                        timeout: float = DEFAULT_TIMEOUT) -> str:
    """The lab as CML topology YAML (CML renumbers ids: n0.., i0.. per node, l0..)."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        return client.join_existing_lab(lab_id, sync_lab=False).download()


def cml_lab_node_configs(*, url: str, username: str, password: str, tls_verify: bool = True,
                         lab_id: str, extract: bool = True,
                         timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
    """Node label -> main configuration text ("" when none).

    With `extract`, CML first pulls the running configuration out of every BOOTED node;
    other nodes keep the configuration they were defined with.
    """
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        lab = client.join_existing_lab(lab_id)
        if extract:
            lab.sync_states()
            for node in lab.nodes():
                if node.state == "BOOTED":
                    node.extract_configuration()
        lab.sync(topology_only=True, exclude_configurations=False)
        return {node.label: node.configuration or "" for node in lab.nodes()}


def cml_lab_titles(*, url: str, username: str, password: str, tls_verify: bool = True,
                   timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
    """Every lab on the controller the user can see: lab id -> title (one request after login)."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        tiles = client._session.get(client._url_for("populate_lab_tiles")).json()
        tiles = tiles.get("lab_tiles", tiles)  # CML before 2.1 answered the mapping itself
        return {lab_id: data.get("lab_title", "") for lab_id, data in tiles.items()}


def cml_lab_ids_by_title(*, url: str, username: str, password: str, tls_verify: bool = True, title: str,
                         timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """The ids of the labs titled exactly `title` (to find a lab whose id was never recorded)."""
    labs = cml_lab_titles(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout)
    return sorted(lab_id for lab_id, lab_title in labs.items() if lab_title == title)
