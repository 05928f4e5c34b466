"""The HTTP side: routes under /api/v0, the /_sim control endpoints, and CmlSimulator."""

from __future__ import annotations

import collections
import contextlib
import json
import re
import socket
import ssl
import sys
import threading
from dataclasses import asdict, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import api_labs as labs
from . import api_system as system
from .controller import CmlController
from .model import NO_CONTENT, Faults, SimError, Text
from .patty import Patty
from .state import state_read, state_write

_LAB = r"labs/(?P<lab>[^/]+)"
_NODE = _LAB + r"/nodes/(?P<node>[^/]+)"
# (method, path under /api/v0/, handler, needs a token)
ROUTES = [(method, re.compile(pattern), handler, auth) for method, pattern, handler, auth in [
    ("GET", r"system_information", system.system_information, False),
    ("POST", r"authenticate", system.authenticate, False),
    ("GET", r"authentication", system.authentication, True),
    ("DELETE", r"logout", system.logout, True),
    ("GET", r"users", system.users, True),
    ("GET", r"system_stats", system.system_stats, True),
    ("GET", r"system_health", system.system_health, True),
    ("GET", r"licensing", system.licensing, True),
    ("POST", r"licensing/registration", system.licensing_register, True),
    ("DELETE", r"licensing/deregistration", system.licensing_deregister, True),
    ("GET", r"resource_pools", system.empty_list, True),
    ("POST", r"import", labs.lab_import, True),
    ("GET", r"labs", labs.lab_list, True),
    ("GET", r"populate_lab_tiles", labs.lab_tiles, True),
    ("GET", _LAB, labs.lab_detail, True),
    ("DELETE", _LAB, labs.lab_delete, True),
    ("GET", _LAB + r"/topology", labs.lab_topology, True),
    ("GET", _LAB + r"/download", labs.lab_download, True),
    ("PUT", _LAB + r"/(?P<action>start|stop|wipe)", labs.lab_action, True),
    ("GET", _LAB + r"/state", labs.lab_state, True),
    ("GET", _LAB + r"/check_if_converged", labs.lab_converged, True),
    ("GET", _LAB + r"/lab_element_state", labs.lab_element_state, True),
    ("GET", _LAB + r"/simulation_stats", labs.lab_simulation_stats, True),
    ("GET", _LAB + r"/nodes", labs.lab_nodes, True),
    ("GET", _LAB + r"/links", labs.lab_links, True),
    ("GET", _LAB + r"/interfaces", labs.lab_interfaces, True),
    ("GET", _LAB + r"/layer3_addresses", labs.lab_empty_dict, True),
    ("GET", _LAB + r"/events", labs.lab_empty_list, True),
    ("GET", _LAB + r"/resource_pools", labs.lab_empty_list, True),
    ("GET", _NODE, labs.node_detail, True),
    ("GET", _NODE + r"/state", labs.node_state, True),
    ("PUT", _NODE + r"/state/(?P<action>start|stop)", labs.node_action, True),
    ("GET", _NODE + r"/check_if_converged", labs.node_converged, True),
    ("GET", _NODE + r"/interfaces", labs.node_interfaces, True),
    ("GET", _NODE + r"/keys/console", labs.node_console_key, True),
    ("PUT", _NODE + r"/extract_configuration", labs.node_extract_configuration, True),
]]
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")  # for call counts: "labs/(?P<lab>[^/]+)" -> "labs/{lab}"
_UNSET = object()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "CML-Simulator/1.0"
    timeout = 30  # idle keep-alive connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        simulator: CmlSimulator = self.server.simulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        if parts.path.startswith("/_sim/"):
            self._send(*simulator.control(method, parts.path.removeprefix("/_sim/"), body))
            return
        faults = simulator.faults
        if faults.slow > 0:
            simulator._stopping.wait(faults.slow)
        if faults.down:
            if faults.down_mode == "drop":
                self.close_connection = True
                return
            self._send(503, {"code": 503, "description": "Service Unavailable: the CML controller is down."})
            return
        if not parts.path.startswith("/api/v0/"):
            self._send(404, {"code": 404, "description": f"Not found: {parts.path}"})
            return
        path = parts.path.removeprefix("/api/v0/").strip("/")
        self._send(*simulator.api_call(method, path, query, body, self.headers.get("Authorization", "")))

    def _send(self, status: int, payload) -> None:
        if payload is NO_CONTENT:
            data, content_type = b"", None
        elif isinstance(payload, Text):
            data, content_type = payload.text.encode(), payload.content_type
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # one simulator may stand for a hundred workers connecting at once

    def __init__(self, address, simulator: CmlSimulator):
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away (its own timeout, or stop()): not worth a traceback
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End kept-alive connections too, so nothing is served after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class CmlSimulator:
    """One simulated CML host: `start()` serves it on 127.0.0.1 in a thread, `stop()` ends it."""

    def __init__(self, *, port: int = 0, username: str = "admin", password: str = "sim-password",
                 version: str = "2.10.1+build.24", hostname: str = "cml-controller", max_nodes: int = 20,
                 boot_delay: float = 0.0, cpu_count: int = 16, memory_gb: int = 64, disk_gb: int = 500,
                 license_tier: str = "CML_Enterprise", registered: bool = True,
                 ssl_context: ssl.SSLContext | None = None, state_file: str | Path | None = None):
        self.port = port
        # Labs, tokens and licence kept in this JSON file across restarts (simulators/cml/state.py); None (the
        # tests): in memory only.
        self.state_file = Path(state_file) if state_file else None
        self.ssl_context = ssl_context  # serve https with it (tests of certificate verification); else http
        self.username, self.password = username, password
        self.controller = CmlController(
            username=username, password=password, version=version, hostname=hostname, max_nodes=max_nodes,
            boot_delay=boot_delay, cpu_count=cpu_count, memory_gb=memory_gb, disk_gb=disk_gb,
            license_tier=license_tier, registered=registered,
        )
        self.calls: collections.Counter[str] = collections.Counter()  # "GET labs/{lab}/state" -> count
        self.patty = Patty()  # console listeners of the running nodes tagged serial:<port> (simulators/cml/patty.py)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> CmlSimulator:
        if self._server is None:
            if self.state_file is not None:
                self._load_state()
            self._stopping.clear()
            self._server = _Server(("127.0.0.1", self.port), self)
            if self.ssl_context is not None:
                self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"cml-simulator-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes requests sleeping in the `slow` fault
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self.patty.close_all()
        self._thread.join(timeout=5)
        self._server = self._thread = None
        self._save_state()

    def _load_state(self) -> None:
        try:
            loaded = state_read(self.controller, self.state_file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"CML simulator: state file {self.state_file} not loaded ({exc}); starting empty", file=sys.stderr)
            return
        if loaded:
            with self.controller.lock:
                self.patty.reconcile(self.controller.labs.values())  # the running nodes' consoles again

    def _save_state(self) -> None:
        if self.state_file is not None:
            with self.controller.lock:
                state_write(self.controller, self.state_file)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://127.0.0.1:{self.port}"

    # --- switches ------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self.controller.faults

    def set_faults(self, **changes) -> Faults:
        """Change some faults (down, down_mode, slow, license_expired, auth_fail); the others stay."""
        unknown = set(changes) - {f.name for f in fields(Faults)}
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        if changes.get("down_mode", "http_503") not in ("http_503", "drop"):
            raise ValueError("down_mode is 'http_503' or 'drop'")
        with self.controller.lock:
            merged = {**asdict(self.controller.faults), **changes}
            merged["slow"] = float(merged["slow"] or 0)
            self.controller.faults = Faults(**merged)
            return self.controller.faults

    def clear_faults(self) -> None:
        with self.controller.lock:
            self.controller.faults = Faults()

    def configure(self, *, boot_delay: float | None = None, max_nodes: int | None = None,
                  cpu_percent: float | None | object = _UNSET) -> None:
        """Change the host at run time; `cpu_percent=None` goes back to the computed figure."""
        with self.controller.lock:
            if boot_delay is not None:
                self.controller.boot_delay = float(boot_delay)
            if max_nodes is not None:
                self.controller.max_nodes = int(max_nodes)
            if cpu_percent is not _UNSET:
                self.controller.cpu_percent_override = None if cpu_percent is None else float(cpu_percent)

    def reset(self) -> None:
        """Forget labs, tokens, faults, run-time configuration and licence changes."""
        self.controller.reset()
        self.patty.close_all()
        self.calls.clear()

    def summary(self) -> dict:
        ctl = self.controller
        with ctl.lock:
            return {
                "url": self.url,
                "faults": asdict(ctl.faults),
                "max_nodes": ctl.max_nodes,
                "boot_delay": ctl.boot_delay,
                "license": {"registration": ctl.registration, "authorization": ctl.authorization,
                            "tier": ctl.license_tier},
                "labs": {lab.id: {"title": lab.title, "state": ctl.lab(lab.id).state,
                                  "nodes": {n.label: n.state for n in lab.nodes}} for lab in list(ctl.labs.values())},
                "consoles": {str(port): label for port, label in sorted(self.patty.ports().items())},
            }

    # --- request entry points (called from the handler threads) --------------------------

    def api_call(self, method: str, path: str, query: dict, body: bytes, authorization: str) -> tuple[int, object]:
        known_path = False
        for route_method, pattern, handler, needs_auth in ROUTES:
            match = pattern.fullmatch(path)
            if not match:
                continue
            known_path = True
            if route_method != method:
                continue
            self.calls[method + " " + _GROUP.sub(r"{\1}", pattern.pattern)] += 1
            try:
                with self.controller.lock:
                    if needs_auth:
                        self.controller.check_token(authorization)
                    try:
                        payload = handler(self.controller, query=query, body=body, authorization=authorization,
                                          **match.groupdict())
                    finally:
                        if method != "GET":  # a start, stop, wipe or delete opens or closes PATty consoles
                            self.patty.reconcile(self.controller.labs.values())
                            self._save_state()
            except SimError as exc:
                return exc.status, {"code": exc.status, "description": exc.description}
            return (204 if payload is NO_CONTENT else 200), payload
        if known_path:
            return 405, {"code": 405, "description": f"Method {method} not allowed on /api/v0/{path}"}
        return 404, {"code": 404, "description": f"Not found in the CML simulator: {method} /api/v0/{path}"}

    def control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        try:
            return self._control(method, path, body)
        finally:
            if method != "GET":
                self._save_state()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        try:
            data = json.loads(body) if body else {}
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            if (method, path) == ("GET", "faults"):
                return 200, asdict(self.faults)
            if (method, path) == ("POST", "faults"):
                return 200, asdict(self.set_faults(**data))
            if (method, path) == ("POST", "config"):
                self.configure(**{k: v for k, v in data.items() if k in ("boot_delay", "max_nodes", "cpu_percent")})
                return 200, self.summary()
            if (method, path) == ("POST", "reset"):
                self.reset()
                return 200, self.summary()
            if (method, path) == ("GET", "state"):
                return 200, self.summary()
        except (ValueError, TypeError) as exc:
            return 400, {"code": 400, "description": str(exc)}
        return 404, {"code": 404, "description": f"Unknown control endpoint: {method} /_sim/{path}"}
