"""Opening a virl2-client session to one CML controller, and bounding how long a call may take."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx
from virl2_client import ClientLibrary

from .errors import CML_EXCEPTIONS, CmlError, cml_error_from

DEFAULT_TIMEOUT = 30.0  # seconds, per HTTP request, for lab operations
T = TypeVar("T")


class _ClientLibrary(ClientLibrary):
    """ClientLibrary that closes its httpx client when connecting fails (it would leak the socket),
    and keeps the system information it reads while connecting (saves a request per health check)."""

    system_information: dict | None = None

    def __init__(self, **kwargs):
        try:
            super().__init__(**kwargs)
        except BaseException:
            session = getattr(self, "_session", None)
            if session is not None:
                session.close()
            raise

    def system_info(self) -> dict:
        self.system_information = super().system_info()
        return self.system_information


@contextmanager
def cml_client(*, url: str, username: str, password: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[ClientLibrary]:
    """A logged-in ClientLibrary; every httpx/virl2 error inside the block becomes a CmlError.

    Connecting costs three requests (system_information, authenticate, authentication).
    """
    if not url or not username or not password:
        # virl2-client would fall back to environment variables, ~/.virlrc and then input().
        raise CmlError(f"CML at {url or '?'}: URL, username and password are all required", kind=CmlError.AUTH,
                       url=url or "")
    client = None
    try:
        client = _ClientLibrary(
            url=url,
            username=username,
            password=password,
            ssl_verify=False,
            allow_http=True,
            raise_for_auth_failure=True,
            timeout=httpx.Timeout(timeout),
        )
        yield client
    except CML_EXCEPTIONS as exc:
        raise cml_error_from(exc, url=url) from exc
    finally:
        if client is not None:
            client._session.close()  # ClientLibrary has no close(); its httpx.Client does


class Budget:
    """A total time allowance shared by several requests."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def apply(self, client: ClientLibrary) -> None:
        """Give the next requests of `client` only what is left (raises when nothing is)."""
        left = self.remaining()
        if left <= 0:
            raise httpx.TimeoutException(f"no time left of the {self.seconds:g}s budget")
        client._session.timeout = httpx.Timeout(left)


def run_bounded(fn: Callable[[], T], *, seconds: float, url: str) -> T:
    """Run `fn` in a daemon thread and stop waiting after `seconds`.

    The thread may still finish its current request afterwards; `fn` should pass the same
    budget to its requests (see Budget) so it ends soon after.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="cml-bounded-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CmlError(f"CML at {url} is unreachable: no answer within {seconds:g}s", kind=CmlError.UNREACHABLE,
                       url=url)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
