"""EC2 and S3 for `make run` and the tests: moto's server on 127.0.0.1, behind a small fault-injecting
proxy so tests can make EC2 throttle, refuse or hang (moto itself always succeeds).

    sim = Ec2Simulator(); sim.start()       # boto3 endpoint_url = sim.url
    sim.arm("StartInstances", "InsufficientInstanceCapacity", times=1)
    sim.arm("*", "timeout", delay=3)        # every call hangs 3 s
    sim.arm("RunInstances", "InsufficientInstanceCapacity",  # only calls with these request parameters
            match={"Placement.AvailabilityZone": "us-west-2a"})
    sim.disarm(); sim.reset(); sim.stop()

As a process: `python -m simulators.ec2 --port 5055` (prints the URL). Faults can also be
set over HTTP: `POST /_sim/faults {"action": "StartInstances", "code": "...", "times": 1}`,
`DELETE /_sim/faults` (with `"match": {...}` as in `arm`).
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# AWS error code → HTTP status EC2 answers with.
FAULT_STATUS = {
    "RequestLimitExceeded": 503,
    "Throttling": 400,
    "UnauthorizedOperation": 403,
    "InsufficientInstanceCapacity": 500,
    "InvalidInstanceID.NotFound": 400,
    "InternalError": 500,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class _Fault:
    def __init__(self, action: str, code: str, times: int | None, delay: float, match: dict | None = None):
        self.action, self.code, self.times, self.delay = action, code, times, delay
        self.match = dict(match or {})

    def key(self) -> tuple:
        return self.action, tuple(sorted(self.match.items()))

    def applies(self, action: str, params: dict) -> bool:
        return self.action in (action, "*") and all(params.get(k) == v for k, v in self.match.items())


class Ec2Simulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        self._host, self._port = host, port
        self._faults: dict[tuple, _Fault] = {}
        self._lock = threading.Lock()
        self.calls: list[str] = []  # EC2 actions seen, in order
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> "Ec2Simulator":
        self._moto.start()
        moto_host, moto_port = self._moto.get_host_and_port()
        self.moto_url = f"http://{moto_host}:{moto_port}"
        self._server = _Server((self._host, self._port), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, name="ec2-sim", daemon=True).start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._moto.stop()

    # --- faults ----------------------------------------------------------------
    def arm(self, action: str, code: str, *, times: int | None = None, delay: float = 0.0,
            match: dict | None = None) -> None:
        """Make `action` ("*" for all) fail with AWS error `code` (or "timeout": hang `delay` s); with `match`,
        only the calls whose query parameters (EC2's flattened form: `Placement.AvailabilityZone`,
        `InstanceType`, `SubnetId`) have these values. A fault with a `match` goes before one without."""
        fault = _Fault(action, code, times, delay, match)
        with self._lock:
            self._faults[fault.key()] = fault

    def disarm(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget every instance (moto's reset), every fault and the call log."""
        self.disarm()
        self.calls.clear()
        request = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def _take_fault(self, action: str, params: dict | None = None) -> _Fault | None:
        params = params or {}
        with self._lock:
            ranked = sorted(self._faults.values(), key=lambda f: (not f.match, f.action == "*"))
            fault = next((f for f in ranked if f.applies(action, params)), None)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults = {k: v for k, v in self._faults.items() if v is not fault}
            return fault


def _error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def _handler_for(sim: Ec2Simulator):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _control(self, body: bytes) -> None:
            if self.command == "DELETE":
                sim.disarm()
            else:
                spec = json.loads(body or b"{}")
                sim.arm(spec.get("action", "*"), spec["code"], times=spec.get("times"), delay=spec.get("delay", 0.0),
                        match=spec.get("match"))
            self._send(204, b"", "application/json")

        def _proxy(self) -> None:
            body = self._body()
            if self.path.startswith("/_sim/faults"):
                return self._control(body)
            form = "x-www-form-urlencoded" in (self.headers.get("Content-Type") or "")  # EC2's query API;
            params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()} if form else {}
            action = params.get("Action", "")  # EC2's query API; not S3
            if action:
                sim.calls.append(action)
                fault = sim._take_fault(action, params)
                if fault is not None:
                    if fault.code == "timeout":
                        time.sleep(fault.delay)
                    else:
                        status = FAULT_STATUS.get(fault.code, 400)
                        return self._send(status, _error_xml(fault.code, f"Simulated {fault.code} for {action}"))
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "expect")}
            if body and not any(k.lower() == "content-type" for k in headers):
                # S3 REST bodies (XML, objects) come without one; urllib would add a form content type and
                # moto would then read the body as a form and see it empty.
                headers["Content-Type"] = "application/octet-stream"
            request = urllib.request.Request(sim.moto_url + self.path, data=body or None, headers=headers,
                                             method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=60) as upstream:
                    status, data, ctype = upstream.status, upstream.read(), upstream.headers.get("Content-Type", "text/xml")
            except urllib.error.HTTPError as exc:
                status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml")
            except urllib.error.URLError as exc:  # moto already stopped (a delayed call outlived the run)
                status, data, ctype = 503, _error_xml("ServiceUnavailable", str(exc.reason)), "text/xml"
            try:
                self._send(status, data, ctype)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _proxy

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="EC2/S3 simulator (moto) with fault injection, on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per EC2 call
    sim = Ec2Simulator(port=args.port).start()
    print(sim.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
