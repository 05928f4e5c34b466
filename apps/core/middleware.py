"""Request plumbing: the client's address, a trace id on every request, static files (problem+json for
every error under /api is apps.api.middleware's)."""

import contextvars
import ipaddress
import logging
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware


trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")
client_ip_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_ip", default=None)
request_log = logging.getLogger("labmanager.request")

TRACE_HEADER = "X-Trace-Id"


def current_trace_id() -> str:
    return trace_id_var.get()


def current_client_ip() -> str | None:
    return client_ip_var.get()


class TraceIdLogFilter(logging.Filter):
    """Adds `trace_id` to every log record (the one of the request being served, or `-`)."""

    def filter(self, record):
        if not hasattr(record, "trace_id"):
            record.trace_id = trace_id_var.get()
        return True


def _networks(values) -> tuple:
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


def _address(value: str | None):
    try:
        return ipaddress.ip_address(value.strip()) if value else None
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple) -> str | None:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the right-most
    address of X-Forwarded-For that is not itself a trusted proxy (what the nearest untrusted hop said;
    anything left of it could be written by the client). A malformed entry where an address is needed
    gives "" (unknown: in no network, one shared rate-limit bucket), never the proxy's own address."""
    address = _address(peer)
    if address is None or not trusted or not any(address in net for net in trusted) or not (forwarded_for or "").strip():
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _address(hop)
        if hop_address is None:
            return ""
        address = hop_address
        if not any(address in net for net in trusted):
            return str(address)
    return str(address)


def scope_client_address(scope) -> str:
    """client_address for an ASGI scope (a WebSocket's handshake), as ClientAddressMiddleware gives requests
    theirs: the socket peer, X-Forwarded-For only from TRUSTED_PROXIES; "unknown" when there is none."""
    peer = (scope.get("client") or ("",))[0] or ""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    return client_address(peer, headers.get("x-forwarded-for"), _networks(settings.TRUSTED_PROXIES)) or "unknown"


class SyncAndAsyncMiddleware:
    """A middleware that takes the mode of what it wraps. Under ASGI a sync middleware runs in a thread
    and waits there for the rest of the request: an async view's long wait (POST /lab) would hold that
    thread. Subclasses answer `__call__` (sync) and `__acall__` (async), without thread hops."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)


class ClientAddressMiddleware(SyncAndAsyncMiddleware):
    """REMOTE_ADDR becomes the client's address (client_address): the one place that reads
    X-Forwarded-For. Every check of an address (anonymous networks, /metrics, per-address rate limits,
    the journal) reads REMOTE_ADDR after this."""

    def __init__(self, get_response):
        super().__init__(get_response)
        self.trusted = _networks(settings.TRUSTED_PROXIES)

    def _rewrite(self, request) -> None:
        if self.trusted:
            request.META["REMOTE_ADDR"] = client_address(
                request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), self.trusted) or ""

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        self._rewrite(request)
        return self.get_response(request)

    async def __acall__(self, request):
        self._rewrite(request)
        return await self.get_response(request)


class TraceIdMiddleware(SyncAndAsyncMiddleware):
    """Gives each request a trace id (sent back as X-Trace-Id) and logs one line per request."""

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        tokens, started = self._begin(request)
        try:
            return self._end(request, self.get_response(request), started)
        finally:
            self._reset(tokens)

    async def __acall__(self, request):
        tokens, started = self._begin(request)
        try:
            return self._end(request, await self.get_response(request), started)
        finally:
            self._reset(tokens)

    @staticmethod
    def _begin(request) -> tuple:
        request.trace_id = uuid.uuid4().hex
        tokens = (trace_id_var.set(request.trace_id), client_ip_var.set(request.META.get("REMOTE_ADDR") or None))
        return tokens, time.perf_counter()

    @staticmethod
    def _end(request, response, started: float):
        response[TRACE_HEADER] = request.trace_id
        if request.path.startswith("/api"):
            request_log.info(
                "%s %s %s %.1fms",
                request.method,
                loggable_path(request),
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
        return response

    @staticmethod
    def _reset(tokens: tuple) -> None:
        trace_id_var.reset(tokens[0])
        client_ip_var.reset(tokens[1])


# Query parameters whose values never reach the log: the OIDC callback's code and state, and credentials
# some clients put in URLs (docs/security.md#what-is-logged-and-what-never-is).
SECRET_QUERY_PARAMETERS = frozenset({"code", "state", "token", "api_key", "access_token", "id_token", "key"})


def loggable_path(request) -> str:
    if not request.GET:
        return request.path
    query = "&".join(
        f"{name}={'[redacted]' if name.lower() in SECRET_QUERY_PARAMETERS else value}"
        for name, values in request.GET.lists() for value in values
    )
    return f"{request.path}?{query}"


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise (static files without nginx: dev, tests, the single-process setup), in the mode of what
    it wraps, like SyncAndAsyncMiddleware: WhiteNoise 6 is sync only. Finding a file is a dict lookup;
    opening it runs in a thread."""

    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
