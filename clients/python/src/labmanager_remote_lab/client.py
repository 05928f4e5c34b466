"""A client of LabManager's remote-lab session API (`/api/remote-lab`: the session queue, heartbeats, labs).

Typical use::

    from labmanager_remote_lab import RemoteLabClient

    with RemoteLabClient("http://127.0.0.1:8000/api/remote-lab", api_key=KEY) as client:
        client.start(timeout=600)                 # join the queue, wait until ACTIVE (prints progress)
        lab = client.acquire("topology.yaml")     # bring the lab up, or attach to the running one
        for device in lab.devices:
            print(device["name"], device["raw"])
        client.release()
    # leaving the block ends the session (DELETE /session/{id}) and stops the heartbeats

While a session exists (waiting or active) a daemon thread sends `POST /session/heartbeat` every
`heartbeat_interval` seconds, so the server does not reap it.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

logger = logging.getLogger("labmanager_remote_lab")

SESSION_HEADER = "X-Session-ID"
ACQUIRE_TIMEOUT = 900.0  # seconds for POST /lab, which waits until the lab's nodes are up
PROGRESS_EVERY = 15.0  # seconds between progress lines when only the estimated wait changes


# --- errors ----------------------------------------------------------------------------------------


class RemoteLabError(Exception):
    """Any failure talking to the remote-lab API. `status_code` is the HTTP status (None when no
    response came back), `detail` the problem+json (or seed `{"detail": ...}`) message, `problem`
    the whole decoded error body (a dict, possibly empty)."""

    def __init__(self, detail: str, *, status_code: int | None = None, problem: dict | None = None,
                 response: httpx.Response | None = None):
        self.detail = detail
        self.status_code = status_code
        self.problem = problem or {}
        self.response = response
        super().__init__(f"{status_code} {detail}" if status_code else detail)


class RemoteLabConnectionError(RemoteLabError):
    """The server could not be reached (connection refused, timeout, ...)."""


class RemoteAuthenticationFailed(RemoteLabError):
    """401/403: no or a wrong API key/token (anonymous access is only allowed from some networks)."""


class SessionNotFound(RemoteLabError):
    """404: the session is unknown (ended, reaped), or for /lab/release and /lab/devices: no lab runs."""


class LabConflict(RemoteLabError):
    """409: e.g. `DELETE /lab?force=false` while the lab is still in use, or `POST /lab` when the worker has no
    room for the topology beside its lablet bookings (`problem["code"] == "insufficient_capacity"`)."""


class SessionLocked(RemoteLabError):
    """423: the session is not ACTIVE, or the worker runs another topology that is still in use."""


class RemoteQueueFull(RemoteLabError):
    """503: the queue of the pool is full; `retry_after` is the server's Retry-After in seconds (or None)."""

    def __init__(self, detail: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after


class WaitTimeout(RemoteLabError):
    """The session did not become ACTIVE (or the queue had no room) within the given timeout."""


class ClientClosed(RemoteLabError):
    """The client was closed; create a new one."""


_ERRORS_BY_STATUS: dict[int, type[RemoteLabError]] = {
    401: RemoteAuthenticationFailed,
    403: RemoteAuthenticationFailed,
    404: SessionNotFound,
    409: LabConflict,
    423: SessionLocked,
    503: RemoteQueueFull,
}


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response) -> RemoteLabError:
    """The RemoteLabError for an error response (problem+json, the seed's `{"detail": ...}` or text)."""
    problem: dict = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
        detail = body.get("detail") or body.get("title") or ""
        if not isinstance(detail, str):  # FastAPI validation errors: a list of dicts
            detail = str(detail)
    else:
        detail = response.text.strip()
    detail = detail or response.reason_phrase or f"HTTP {response.status_code}"
    status = response.status_code
    cls = _ERRORS_BY_STATUS.get(status, RemoteLabError)
    kwargs: dict[str, Any] = {"status_code": status, "problem": problem, "response": response}
    if cls is RemoteQueueFull:
        kwargs["retry_after"] = _retry_after(response.headers.get("Retry-After"))
    return cls(detail, **kwargs)


# --- results ---------------------------------------------------------------------------------------


class CreatedSession(NamedTuple):
    session_id: str
    position: int


class RemoteSessionStatus(NamedTuple):
    status: str  # "waiting" or "active"
    position: int
    estimated_wait_seconds: float | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


class AcquiredRemoteLab(NamedTuple):
    devices: list[dict]  # [{"name": ..., "raw": {...}}, ...]
    reused: bool


def format_wait(seconds: float | None) -> str:
    """'~45s', '~3m 05s', '~1h 02m'; 'unknown' without an estimate."""
    if seconds is None:
        return "unknown"
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"~{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"~{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"~{hours}h {minutes:02d}m"


# --- the client ------------------------------------------------------------------------------------


class RemoteLabClient:
    """One queue session on a remote-lab server.

    `base_url` is the API root, e.g. `http://127.0.0.1:8000/api/remote-lab`. `api_key` is sent as
    `X-API-Key`, `token` as `Authorization: Bearer`; without either the server must allow anonymous
    access from this network. `timeout` is the per-request HTTP timeout in seconds. `http` is the
    HTTP module (anything with an httpx-compatible `Client`); tests may pass a stand-in.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, token: str | None = None,
                 timeout: float = 30.0, heartbeat_interval: float | None = 30.0, http: Any = httpx):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.heartbeat_interval = heartbeat_interval
        self._headers: dict[str, str] = {"Accept": "application/json, application/problem+json"}
        if api_key:
            self._headers["X-API-Key"] = api_key
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http_module = http
        self._http = self._new_http()
        self.session_id: str | None = None
        self.position: int | None = None
        self.session_lost = False  # set when a heartbeat found the session gone (404)
        self.heartbeats_sent = 0
        self._closed = False
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

    def _new_http(self):
        return self._http_module.Client(base_url=self.base_url + "/", headers=self._headers,
                                        timeout=self.timeout)

    # -- plumbing

    def _request(self, method: str, path: str, *, session: bool = False, http=None, **kwargs) -> httpx.Response:
        if self._closed:
            raise ClientClosed("the client is closed")
        headers = dict(kwargs.pop("headers", None) or {})
        if session:
            headers[SESSION_HEADER] = self._require_session()
        try:
            response = (http or self._http).request(method, path.lstrip("/"), headers=headers, **kwargs)
        except httpx.HTTPError as exc:  # transport errors (connect, read timeout, ...)
            raise RemoteLabConnectionError(f"{method} {self.base_url}/{path.lstrip('/')}: {exc!r}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _require_session(self) -> str:
        if self._closed:
            raise ClientClosed("the client is closed")
        if not self.session_id:
            raise RemoteLabError("no session: call create_session() (or start()) first")
        return self.session_id

    # -- sessions

    def create_session(self) -> CreatedSession:
        """`POST /session`: join the queue. Starts the heartbeat thread. Raises RemoteQueueFull (503)."""
        if self.session_id:
            raise RemoteLabError(f"this client already has session {self.session_id}; close() it first")
        body = self._request("POST", "/session").json()
        self.session_id = str(body["session_id"])
        self.position = int(body.get("position", 0))
        self.session_lost = False
        self._start_heartbeats()
        return CreatedSession(self.session_id, self.position)

    def status(self) -> RemoteSessionStatus:
        """`GET /session/{id}`: status, position and (LabManager) estimated wait."""
        body = self._request("GET", f"/session/{self._require_session()}").json()
        estimate = body.get("estimated_wait_seconds")
        result = RemoteSessionStatus(str(body["status"]), int(body.get("position", 0)),
                               float(estimate) if estimate is not None else None)
        self.position = result.position
        return result

    def wait_until_active(self, timeout: float | None = 600.0, poll_interval: float = 2.0,
                          progress: Callable[[str], Any] | None = print) -> RemoteSessionStatus:
        """Poll `GET /session/{id}` until the session is ACTIVE; `progress` gets a line with the
        position and estimated wait when the position changes (and every PROGRESS_EVERY seconds when
        only the estimate changes), then one when active (None: silent). Raises WaitTimeout after `timeout`
        seconds (None: wait forever) and SessionNotFound if the server dropped the session."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._wait_until_active(deadline, timeout, poll_interval, progress)

    def _wait_until_active(self, deadline: float | None, timeout: float | None, poll_interval: float,
                           progress: Callable[[str], Any] | None) -> RemoteSessionStatus:
        session_id = self._require_session()
        last_seen = None
        last_line_at = 0.0
        while True:
            current = self.status()
            if current.active:
                if progress is not None and last_seen is not None:
                    progress(f"remote-lab: session {session_id} is active")
                return current
            shown = (current.position, current.estimated_wait_seconds)
            # A line when the position moves; a changed estimate alone at most every PROGRESS_EVERY s.
            if progress is not None and (last_seen is None or shown[0] != last_seen[0] or (
                    shown != last_seen and time.monotonic() - last_line_at >= PROGRESS_EVERY)):
                last_line_at = time.monotonic()
                progress(f"remote-lab: session {session_id} waiting, position {current.position}, "
                         f"estimated wait {format_wait(current.estimated_wait_seconds)}")
            last_seen = shown
            if self.session_lost:
                raise SessionNotFound(f"session {session_id} was dropped by the server", status_code=404)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"session {session_id} not active after {timeout:g}s "
                                      f"(position {current.position})")
                time.sleep(min(poll_interval, remaining))
            else:
                time.sleep(poll_interval)

    def start(self, timeout: float | None = 600.0, poll_interval: float = 2.0,
              progress: Callable[[str], Any] | None = print) -> RemoteSessionStatus:
        """create_session() (retrying while the queue is full, honouring Retry-After) then
        wait_until_active(), both within `timeout` seconds overall."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                created = self.create_session()
                break
            except RemoteQueueFull as exc:
                delay = exc.retry_after if exc.retry_after is not None else poll_interval
                delay = max(delay, 0.05)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise WaitTimeout(f"the queue stayed full for {timeout:g}s: {exc.detail}",
                                      status_code=503, problem=exc.problem) from exc
                if progress is not None:
                    progress(f"remote-lab: queue full, retrying in {delay:g}s")
                time.sleep(delay)
        if progress is not None and created.position:
            progress(f"remote-lab: session {created.session_id} queued at position {created.position}")
        return self._wait_until_active(deadline, timeout, poll_interval, progress)

    def heartbeat(self) -> None:
        """`POST /session/heartbeat` once (the background thread does this for you)."""
        self._request("POST", "/session/heartbeat", session=True)

    # -- lab

    def acquire(self, topology_path: str | os.PathLike, extra_files: Iterable = (),
                reuse: bool = True, *, timeout: float | None = ACQUIRE_TIMEOUT) -> AcquiredRemoteLab:
        """`POST /lab`: upload the topology (a `.yml`/`.yaml` file) and bring the lab up, or attach
        to the running one (`reused`). `extra_files` are paths or `(name, bytes)` pairs. `timeout`:
        for this request (bringing a lab up takes minutes), seconds; None: the client's timeout."""
        path = Path(topology_path)
        files = [("topology", (path.name, path.read_bytes(), "application/yaml"))]
        for extra in extra_files:
            if isinstance(extra, tuple):
                name, content = extra
                content = content.encode() if isinstance(content, str) else content
            else:
                name, content = Path(extra).name, Path(extra).read_bytes()
            files.append(("extra_files", (name, content, "application/octet-stream")))
        response = self._request("POST", "/lab", session=True, files=files,
                                 data={"reuse": "true" if reuse else "false"},
                                 timeout=self.timeout if timeout is None else max(timeout, self.timeout))
        body = response.json()
        return AcquiredRemoteLab(devices=list(body.get("devices") or []), reused=bool(body.get("reused")))

    def devices(self) -> list[dict]:
        """`GET /lab/devices`: [{"name", "raw"}, ...] of the running lab (SessionNotFound if none)."""
        return list(self._request("GET", "/lab/devices", session=True).json())

    def release(self) -> None:
        """`POST /lab/release`: drop this session's claim on the lab (it stays up, idle, for reuse)."""
        self._request("POST", "/lab/release", session=True)

    def destroy_lab(self, force: bool = True) -> bool:
        """`DELETE /lab`: tear the lab down. True when a teardown was dispatched (202), False when no
        lab ran (204). With force=False raises LabConflict (409) while the lab is in use."""
        response = self._request("DELETE", "/lab", session=True,
                                 params={"force": "true" if force else "false"})
        return response.status_code == 202

    # -- end

    def close(self) -> None:
        """End the session (`DELETE /session/{id}`; an unknown session is fine), stop the heartbeats
        and close the connections. Idempotent."""
        if self._closed:
            return
        self._stop_heartbeats()
        try:
            if self.session_id:
                try:
                    self._request("DELETE", f"/session/{self.session_id}")
                except SessionNotFound:
                    pass
                self.session_id = None
        finally:
            self._closed = True
            self._http.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> RemoteLabClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteLabClient {self.base_url} session={self.session_id}>"

    # -- heartbeats

    @property
    def heartbeat_running(self) -> bool:
        return self._hb_thread is not None and self._hb_thread.is_alive()

    def _start_heartbeats(self) -> None:
        if not self.heartbeat_interval or self.heartbeat_interval <= 0:
            return
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, args=(self.session_id, self._hb_stop),
                                           name=f"remote-lab-heartbeat-{self.session_id}", daemon=True)
        self._hb_thread.start()

    def _stop_heartbeats(self) -> None:
        self._hb_stop.set()
        thread, self._hb_thread = self._hb_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)

    def _heartbeat_loop(self, session_id: str, stop: threading.Event) -> None:
        # Its own connection pool: the main thread may be in the middle of a long POST /lab.
        http = self._new_http()
        try:
            while not stop.wait(self.heartbeat_interval):
                try:
                    response = http.post("session/heartbeat", headers={SESSION_HEADER: session_id})
                except httpx.HTTPError as exc:
                    logger.warning("remote-lab heartbeat for %s failed (will retry): %r", session_id, exc)
                    continue
                except Exception:  # never let the thread die silently on a surprise
                    logger.exception("remote-lab heartbeat for %s failed (will retry)", session_id)
                    continue
                if response.status_code == 404:
                    logger.error("remote-lab session %s is gone (heartbeat answered 404); heartbeats stop",
                                 session_id)
                    self.session_lost = True
                    return
                if response.status_code >= 400:
                    logger.warning("remote-lab heartbeat for %s answered %s (will retry): %s", session_id,
                                   response.status_code, error_from_response(response).detail)
                    continue
                self.heartbeats_sent += 1
        finally:
            http.close()
