"""The state of one simulated CML host: labs, tokens, licence, capacity, faults."""

from __future__ import annotations

import threading
import time
import uuid

from .model import ACTIVE_STATES, Faults, Lab, Node, SimError

EXPIRED_AUTHORIZATIONS = frozenset({"AUTHORIZED_EXPIRED", "EVAL_EXPIRED"})


class CmlController:
    """Everything the API handlers read and change. Callers hold `lock` around each request."""

    def __init__(self, *, username: str, password: str, version: str, hostname: str, max_nodes: int,
                 boot_delay: float, cpu_count: int, memory_gb: int, disk_gb: int, license_tier: str,
                 registered: bool):
        self.username, self.password, self.version, self.hostname = username, password, version, hostname
        self.cpu_count, self.memory_gb, self.disk_gb = cpu_count, memory_gb, disk_gb
        self.user_id = str(uuid.uuid4())
        self.compute_id = str(uuid.uuid4())
        self.product_uuid = str(uuid.uuid4())
        self._initial = {"max_nodes": max_nodes, "boot_delay": boot_delay, "license_tier": license_tier,
                         "registered": registered}
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Back to the state the simulator was built with: no labs, no tokens, no faults."""
        with self.lock:
            self.labs: dict[str, Lab] = {}
            self.tokens: set[str] = set()
            self.faults = Faults()
            self.max_nodes: int = self._initial["max_nodes"]
            self.boot_delay: float = self._initial["boot_delay"]
            self.cpu_percent_override: float | None = None
            self.license_tier: str = self._initial["license_tier"]
            self.registration = "COMPLETED" if self._initial["registered"] else "NOT_REGISTERED"
            self.registration_failure: str | None = None
            self.registered_at: str | None = None

    def check_token(self, authorization: str) -> None:
        token = authorization.removeprefix("Bearer ")
        if self.faults.auth_fail or token not in self.tokens:
            raise SimError(401, "No authorization token provided or token invalid.")

    def lab(self, lab_id: str) -> Lab:
        lab = self.labs.get(lab_id)
        if lab is None:
            raise SimError(404, f"Lab not found: {lab_id}")
        lab.tick()
        return lab

    def running_nodes(self, *, counted_only: bool = False) -> list[Node]:
        running = []
        for lab in self.labs.values():
            lab.tick()
            running += [n for n in lab.nodes if n.state in ACTIVE_STATES and (n.counted or not counted_only)]
        return running

    @property
    def authorization(self) -> str:
        """CML's licence authorization status."""
        if self.faults.license_expired:
            return "AUTHORIZED_EXPIRED" if self.registration == "COMPLETED" else "EVAL_EXPIRED"
        return "IN_COMPLIANCE" if self.registration == "COMPLETED" else "EVAL"

    def start_nodes(self, nodes: list[Node]) -> None:
        """Start the nodes that are not running, as CML does: refused when unlicensed or over capacity."""
        if self.authorization in EXPIRED_AUTHORIZATIONS:
            raise SimError(400, "Licensing issue: the product authorization has expired; nodes cannot be started.")
        to_start = [n for n in nodes if n.state not in ACTIVE_STATES]
        wanted = sum(1 for n in to_start if n.counted)
        running = len(self.running_nodes(counted_only=True))
        if running + wanted > self.max_nodes:
            raise SimError(
                400,
                f"Not enough node capacity: starting {wanted} node(s) with {running} already running "
                f"would exceed this host's limit of {self.max_nodes} running nodes.",
            )
        boot_at = time.monotonic() + self.boot_delay
        for node in to_start:
            node.state, node.boot_at = "STARTED", boot_at
        for lab in self.labs.values():
            lab.tick()
