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

State across restarts (`make run`): `--state-file var/sim/ec2.pickle` (or `state_file=`) keeps what moto
holds (EC2 instances with their ids, states and addresses, security groups, S3 buckets and objects) in a file:
loaded on start, written again after every call that may change something (and on stop). The file is a
pickle of moto's own in-memory backends (moto 5 pickles them; LocalStack persists moto the same way), not a
log of requests to replay: replaying RunInstances would draw new random instance ids and addresses, and the
database keeps the old ones. The file is tied to the moto version that wrote it: another version (or an
unreadable file) starts the simulator empty, with a warning. Delete the file to start empty. Without a
state file (the tests), everything stays in memory and goes with the process. Only load a state file this
simulator wrote: unpickling runs code.
"""

import argparse
import contextlib
import json
import os
import pickle
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
PERSISTED_SERVICES = ("ec2", "s3")  # moto backends kept in the state file
READ_ONLY_PREFIXES = ("Describe", "Get", "List")  # EC2 query actions that change nothing


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
    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_file: str | Path | None = None):
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        self._host, self._port = host, port
        self.state_file = Path(state_file) if state_file else None
        self._faults: dict[tuple, _Fault] = {}
        self._lock = threading.Lock()
        # With a state file, calls pass through moto one at a time so that a snapshot never sees a backend
        # half-changed (the simulator of `make run` serves one person; the tests keep calls concurrent).
        self.state_lock = threading.Lock() if self.state_file else contextlib.nullcontext()
        self.calls: list[str] = []  # EC2 actions seen, in order
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> "Ec2Simulator":
        if self.state_file is not None:
            self.load_state()
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
        if self.state_file is not None:
            with self.state_lock:
                self.save_state()
        self._moto.stop()

    # --- state across restarts ---------------------------------------------------
    def save_state(self) -> None:
        """Write moto's backends to the state file (atomically: a new file, then a rename). Callers hold
        `state_lock`."""
        import moto
        from moto.backends import get_backend

        backends = {name: {account: dict(regions) for account, regions in get_backend(name).items()}
                    for name in PERSISTED_SERVICES}
        data = pickle.dumps({"moto": moto.__version__, "backends": backends}, protocol=pickle.HIGHEST_PROTOCOL)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(self.state_file.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, self.state_file)

    def load_state(self) -> bool:
        """Put the state file's backends back into moto (before it serves). False (and a warning on stderr)
        when there is no file, it does not unpickle, or another moto version wrote it."""
        import moto
        from moto.backends import get_backend

        if not self.state_file.exists():
            return False
        try:
            saved = pickle.loads(self.state_file.read_bytes())
            if saved.get("moto") != moto.__version__:
                raise ValueError(f"written by moto {saved.get('moto')}, this is moto {moto.__version__}")
            for name, accounts in saved["backends"].items():
                live = get_backend(name)
                for account, regions in accounts.items():
                    for region, backend in regions.items():
                        dict.__setitem__(live[account], region, backend)  # live[account] creates the account
        except Exception as exc:  # noqa: BLE001 - any unreadable state: start empty, say so
            print(f"EC2 simulator: state file {self.state_file} not loaded ({exc}); starting empty",
                  file=sys.stderr)
            return False
        return True

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
        with self.state_lock:
            urllib.request.urlopen(request, timeout=10).read()
            if self.state_file is not None:
                self.save_state()

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
            changes = self.command not in ("GET", "HEAD") and not action.startswith(READ_ONLY_PREFIXES)
            with sim.state_lock:
                try:
                    with urllib.request.urlopen(request, timeout=60) as upstream:
                        status, data, ctype = upstream.status, upstream.read(), upstream.headers.get("Content-Type", "text/xml")
                except urllib.error.HTTPError as exc:
                    status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml")
                except urllib.error.URLError as exc:  # moto already stopped (a delayed call outlived the run)
                    status, data, ctype = 503, _error_xml("ServiceUnavailable", str(exc.reason)), "text/xml"
                if changes and sim.state_file is not None and status < 500:
                    sim.save_state()
            try:
                self._send(status, data, ctype)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _proxy

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="EC2/S3 simulator (moto) with fault injection, on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", help="keep moto's state in this file across restarts (make run: "
                        "var/sim/ec2.pickle); without it the state goes with the process")
    args = parser.parse_args()
    import logging
    import signal

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per EC2 call
    sim = Ec2Simulator(port=args.port, state_file=args.state_file).start()
    print(sim.url, flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # bin/run.sh stops it with TERM: save and leave
        signal.signal(signum, lambda *_: done.set())
    try:
        done.wait()
    finally:
        sim.stop()  # the state file is written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of moto's objects (seconds of garbage collection)


if __name__ == "__main__":
    main()
