"""A small in-process fake of the remote-lab session API (the seed contract, minimally), on 127.0.0.1.

One worker: the session at the head of the FIFO queue is ACTIVE (position 0). Records every request
(method, path, headers) and every heartbeat; `fail(method, path, status, ...)` queues one-shot error
responses; `auto_advance_after` ends the head session after that many status polls by waiting sessions
(so a waiting client moves up without outside help).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PREFIX = "/api/remote-lab"
REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict", 423: "Locked",
           500: "Internal Server Error", 503: "Service Unavailable"}


class FakeRemoteLab:
    def __init__(self, *, max_queue: int | None = None, wait_per_position: float = 90.0):
        self.max_queue = max_queue
        self.wait_per_position = wait_per_position
        self.auto_advance_after: int | None = None
        self.lock = threading.Lock()
        self.queue: list[str] = []  # session ids, FIFO; queue[0] is active
        self.requests: list[tuple[str, str, dict]] = []
        self.heartbeats: list[tuple[float, str]] = []
        self.uploads: list[dict] = []
        self.lab: dict | None = None  # {"sha", "refs": set, "devices"}
        self.faults: dict[tuple[str, str], list[tuple[int, str, dict]]] = {}
        self._waiting_polls = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- control

    def start(self) -> FakeRemoteLab:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="fake-remote-lab", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=5)
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    def fail(self, method: str, path: str, status: int, detail: str = "injected", *, headers=None,
             times: int = 1, seed_style: bool = False) -> None:
        """The next `times` requests `method path` (path under the prefix) answer `status`."""
        with self.lock:
            for _ in range(times):
                self.faults.setdefault((method, path), []).append(
                    (status, detail, {"headers": headers or {}, "seed_style": seed_style}))

    def add_session(self) -> str:
        """A session created behind the clients' backs (e.g. to occupy the worker)."""
        with self.lock:
            return self._create()

    def drop(self, session_id: str) -> None:
        """The server forgets a session (as if reaped)."""
        with self.lock:
            self._end(session_id)

    def heartbeats_of(self, session_id: str) -> int:
        with self.lock:
            return sum(1 for _, sid in self.heartbeats if sid == session_id)

    def requests_to(self, method: str, path: str) -> list[dict]:
        with self.lock:
            return [h for m, p, h in self.requests if m == method and p == path]

    # -- state (called with the lock held)

    def _create(self) -> str:
        session_id = str(uuid.uuid4())
        self.queue.append(session_id)
        return session_id

    def _end(self, session_id: str) -> None:
        if session_id in self.queue:
            self.queue.remove(session_id)
        if self.lab is not None:
            self.lab["refs"].discard(session_id)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffered: headers and body leave in one segment (no delayed-ACK stalls)
    fake: FakeRemoteLab

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- responses

    def _send(self, status: int, body=None, *, content_type="application/json", headers=None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status, REASONS.get(status))
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _problem(self, status: int, detail: str, *, headers=None, seed_style=False) -> None:
        if seed_style:
            self._send(status, {"detail": detail}, headers=headers)
        else:
            self._send(status, {"type": "about:blank", "title": REASONS.get(status, "Error"), "status": status,
                                "detail": detail}, content_type="application/problem+json", headers=headers)

    # -- dispatch

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        if not split.path.startswith(PREFIX + "/"):
            return self._problem(404, "not under the prefix")
        path = split.path[len(PREFIX):]
        query = parse_qs(split.query)
        fake = self.fake
        with fake.lock:
            fake.requests.append((method, path, dict(self.headers)))
            faults = fake.faults.get((method, path))
            fault = faults.pop(0) if faults else None
        if fault is not None:
            status, detail, extra = fault
            return self._problem(status, detail, headers=extra["headers"], seed_style=extra["seed_style"])
        parts = path.strip("/").split("/")
        with fake.lock:
            if method == "POST" and path == "/session":
                if fake.max_queue is not None and len(fake.queue) >= fake.max_queue:
                    return self._problem(503, "The session queue is full.", headers={"Retry-After": "7"})
                session_id = fake._create()
                return self._send(201, {"session_id": session_id, "position": fake.queue.index(session_id)})
            if method == "POST" and path == "/session/heartbeat":
                session_id = self.headers.get("X-Session-ID")
                if session_id not in fake.queue:
                    return self._problem(404, "Session not found")
                fake.heartbeats.append((time.monotonic(), session_id))
                return self._send(204)
            if len(parts) == 2 and parts[0] == "session" and method in ("GET", "DELETE"):
                session_id = parts[1]
                if session_id not in fake.queue:
                    return self._problem(404, "Session not found")
                if method == "DELETE":
                    fake._end(session_id)
                    return self._send(204)
                position = fake.queue.index(session_id)
                if position and fake.auto_advance_after is not None:
                    fake._waiting_polls += 1
                    if fake._waiting_polls >= fake.auto_advance_after:
                        fake._waiting_polls = 0
                        fake._end(fake.queue[0])
                        position = fake.queue.index(session_id)
                body = {"status": "active" if position == 0 else "waiting", "position": position}
                if position:
                    body["estimated_wait_seconds"] = position * fake.wait_per_position
                return self._send(200, body)
            if parts[0] == "lab":
                session_id = self.headers.get("X-Session-ID")
                if session_id not in fake.queue:
                    return self._problem(404, "Session not found")
                if fake.queue.index(session_id) != 0:
                    return self._problem(423, "Session is not active")
                return self._lab(method, path, session_id, body, query)
        return self._problem(404, f"no route {method} {path}")

    def _lab(self, method, path, session_id, body, query):
        fake = self.fake
        if method == "POST" and path == "/lab":
            fields = _multipart(self.headers.get("Content-Type", ""), body)
            fake.uploads.append(fields)
            topology = fields.get("topology", [None])[0]
            if topology is None or not topology["filename"].lower().endswith((".yml", ".yaml")):
                return self._problem(400, "Topology file must end in .yml or .yaml")
            sha = hashlib.sha256(topology["content"]).hexdigest()
            reuse = fields.get("reuse", [{"content": b"true"}])[0]["content"].decode().lower() == "true"
            if fake.lab is not None and fake.lab["sha"] == sha and reuse:
                fake.lab["refs"].add(session_id)
                return self._send(200, {"reused": True, "devices": fake.lab["devices"]})
            if fake.lab is not None and fake.lab["refs"] - {session_id}:
                return self._problem(423, "Another topology is running and in use")
            devices = [{"name": f"r{i}", "raw": {"node": f"r{i}", "mgmt_ip": f"192.0.2.{i}"}} for i in (1, 2)]
            fake.lab = {"sha": sha, "refs": {session_id}, "devices": devices}
            return self._send(200, {"reused": False, "devices": devices})
        if method == "POST" and path == "/lab/release":
            if fake.lab is None:
                return self._problem(404, "No lab is running")
            fake.lab["refs"].discard(session_id)
            return self._send(204)
        if method == "GET" and path == "/lab/devices":
            if fake.lab is None:
                return self._problem(404, "No lab is running")
            return self._send(200, fake.lab["devices"])
        if method == "DELETE" and path == "/lab":
            if fake.lab is None:
                return self._send(204)
            force = query.get("force", ["true"])[0].lower() != "false"
            if not force and fake.lab["refs"]:
                return self._problem(409, "Lab is still in use")
            fake.lab = None
            return self._send(202)
        return self._problem(404, f"no route {method} {path}")


def _multipart(content_type: str, body: bytes) -> dict[str, list[dict]]:
    """{field name: [{"filename", "content"}, ...]} of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, list[dict]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields.setdefault(name, []).append({"filename": part.get_filename(),
                                            "content": part.get_payload(decode=True) or b""})
    return fields
