"""Opening a virl2-client session to one CML controller, and bounding how long a call may take."""

from __future__ import annotations

import functools
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from django.conf import settings
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


@functools.lru_cache(maxsize=8)
def _tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Verifies the controller's certificate and host name against `ca_bundle` (a PEM file), or the
    system's CAs when it is "". One context per bundle, shared by every connection (it is thread-safe)."""
    return ssl.create_default_context(cafile=ca_bundle or None)


def tls_verification(*, url: str, tls_verify: bool = True) -> ssl.SSLContext | bool:
    """What virl2-client gets as `ssl_verify`, after refusing plain http unless settings.CML_ALLOW_HTTP.

    `tls_verify=False` is a worker's opt-out (Worker.cml_tls_verify, set knowingly by an operator)."""
    if urlsplit(url).scheme.lower() == "http" and not settings.CML_ALLOW_HTTP:
        raise CmlError(f"CML at {url}: plain http is refused (the CML password would cross the network in clear); "
                       "use https, or set CML_ALLOW_HTTP=true (development only)", kind=CmlError.INSECURE, url=url)
    if not tls_verify:
        return False
    try:
        return _tls_context(settings.CML_CA_BUNDLE)
    except (OSError, ssl.SSLError) as exc:
        raise CmlError(f"CML_CA_BUNDLE {settings.CML_CA_BUNDLE!r} cannot be loaded: {exc}", kind=CmlError.INSECURE,
                       url=url) from None


@contextmanager
def cml_client(*, url: str, username: str, password: str, tls_verify: bool = True,
               timeout: float = DEFAULT_TIMEOUT) -> Iterator[ClientLibrary]:
    """A logged-in ClientLibrary; every httpx/virl2 error inside the block becomes a CmlError.

    The controller's certificate is verified (settings.CML_CA_BUNDLE, else the system's CAs) unless
    `tls_verify` is False; an http:// URL is refused unless settings.CML_ALLOW_HTTP.
    Connecting costs three requests (system_information, authenticate, authentication).
    """
    if not url or not username or not password:
        # virl2-client would fall back to environment variables, ~/.virlrc and then input().
        raise CmlError(f"CML at {url or '?'}: URL, username and password are all required", kind=CmlError.AUTH,
                       url=url or "")
    ssl_verify = tls_verification(url=url, tls_verify=tls_verify)
    client = None
    try:
        client = _ClientLibrary(
            url=url,
            username=username,
            password=password,
            ssl_verify=ssl_verify,
            allow_http=settings.CML_ALLOW_HTTP,
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
