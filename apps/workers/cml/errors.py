"""One exception for everything that goes wrong talking to CML, with a `kind` to branch on."""

from __future__ import annotations

import httpx
from virl2_client.exceptions import ElementNotFound, InitializationError, VirlException


class CmlError(Exception):
    """A CML call failed. `kind` says how; the message never holds credentials.

    - `unreachable`: no answer in time, connection refused/reset, or a 5xx (CML down or not ready).
    - `auth`: the controller refused the username/password (or the token).
    - `refused`: CML answered and declined the operation (4xx), e.g. a start beyond the
      node capacity, a wipe of a running lab, an invalid topology.
    - `not_found`: the lab or node does not exist on that controller.
    - `timeout`: the operation was accepted but did not converge within the wait.
    - `incompatible`: the controller's version is not one virl2-client supports.
    - `insecure`: refused before connecting: a plain http URL without CML_ALLOW_HTTP, or an unreadable
      CML_CA_BUNDLE. (A certificate that fails verification is `unreachable`, with the TLS reason.)
    """

    UNREACHABLE = "unreachable"
    AUTH = "auth"
    REFUSED = "refused"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    INCOMPATIBLE = "incompatible"
    INSECURE = "insecure"

    def __init__(self, message: str, *, kind: str, url: str = "", status_code: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.url = url
        self.status_code = status_code


def _description(response: httpx.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and data.get("description"):
            return str(data["description"])
    except ValueError:
        pass
    return (response.text or response.reason_phrase or "").strip()[:300]


# What a CML call can raise besides our own CmlError: translated by `cml_error_from`.
CML_EXCEPTIONS = (httpx.HTTPError, VirlException, ValueError)


def cml_error_from(exc: BaseException, *, url: str) -> CmlError:
    """Translate one of CML_EXCEPTIONS (httpx or virl2-client) into a CmlError."""
    where = f"CML at {url}"
    if isinstance(exc, CmlError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return CmlError(f"{where} is unreachable: no answer in time ({type(exc).__name__})", kind=CmlError.UNREACHABLE,
                        url=url)
    if isinstance(exc, httpx.HTTPStatusError):  # virl2's APIError is one too
        status = exc.response.status_code
        detail = _description(exc.response)
        if status in (401, 403):
            return CmlError(f"{where} refused the credentials ({status}): {detail}", kind=CmlError.AUTH, url=url,
                            status_code=status)
        if status == 404:
            return CmlError(f"{where}: not found: {detail}", kind=CmlError.NOT_FOUND, url=url, status_code=status)
        if status >= 500:
            return CmlError(f"{where} is unavailable ({status}): {detail}", kind=CmlError.UNREACHABLE, url=url,
                            status_code=status)
        return CmlError(f"{where} refused the operation ({status}): {detail}", kind=CmlError.REFUSED, url=url,
                        status_code=status)
    if isinstance(exc, httpx.TransportError):
        return CmlError(f"{where} is unreachable: {type(exc).__name__}: {exc}", kind=CmlError.UNREACHABLE, url=url)
    if isinstance(exc, ElementNotFound):
        return CmlError(f"{where}: {type(exc).__name__}: {exc}", kind=CmlError.NOT_FOUND, url=url, status_code=404)
    if isinstance(exc, InitializationError):
        cause = exc.args[0] if exc.args else exc
        if isinstance(cause, BaseException):  # virl2 wraps transport errors of the auth check
            return cml_error_from(cause, url=url)
        text = str(exc)
        if "authenticate" in text:
            return CmlError(f"{where} refused the credentials: {text}", kind=CmlError.AUTH, url=url, status_code=403)
        if "version" in text:
            return CmlError(f"{where} is not supported: {text}", kind=CmlError.INCOMPATIBLE, url=url)
        return CmlError(f"{where}: cannot connect: {text}", kind=CmlError.UNREACHABLE, url=url)
    if isinstance(exc, ValueError):  # a body that is not the JSON CML sends
        return CmlError(f"{where} sent an unexpected answer: {exc}", kind=CmlError.UNREACHABLE, url=url)
    return CmlError(f"{where} refused the operation: {type(exc).__name__}: {exc}", kind=CmlError.REFUSED, url=url)
