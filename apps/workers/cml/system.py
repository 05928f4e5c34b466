"""CML health, licence and load of one controller; licence registration."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .client import DEFAULT_TIMEOUT, Budget, cml_client, run_bounded
from .errors import CML_EXCEPTIONS, CmlError, cml_error_from

HEALTH_TIMEOUT = 5.0
GIB = 1024**3
EXPIRED_AUTHORIZATIONS = frozenset({"EVAL_EXPIRED", "AUTHORIZED_EXPIRED"})
REGISTERING = frozenset({"IN_PROGRESS", "RETRY_IN_PROGRESS"})


@dataclass(frozen=True)
class CmlSystemStatus:
    reachable: bool
    cml_service_status: str  # "available" | "unavailable"
    version: str | None = None
    ready: bool | None = None
    # "registered" | "registering" | "unregistered" | "expired" | "out_of_compliance" | "unknown"
    license_status: str = "unknown"
    license_tier: str | None = None  # "enterprise", "education", "personal", "personal40", ...
    license_registration: str | None = None  # CML's own registration status (COMPLETED, NOT_REGISTERED, ...)
    license_authorization: str | None = None  # CML's own authorization status (IN_COMPLIANCE, ...)
    health_valid: bool | None = None
    health_issues: tuple[str, ...] = ()
    cpu_percent: float | None = None
    cpu_count: int | None = None
    memory_used_gb: float | None = None
    memory_total_gb: float | None = None
    disk_used_gb: float | None = None
    disk_total_gb: float | None = None
    nodes_running: int | None = None
    nodes_total: int | None = None
    error: str = ""  # why it is unavailable
    elapsed_s: float = 0.0

    @property
    def memory_percent(self) -> float | None:
        if not self.memory_total_gb or self.memory_used_gb is None:
            return None
        return round(100.0 * self.memory_used_gb / self.memory_total_gb, 1)


def license_status_from(licensing: dict) -> str:
    """Map CML's GET /licensing answer to one word."""
    registration = (licensing.get("registration") or {}).get("status")
    authorization = (licensing.get("authorization") or {}).get("status")
    if authorization in EXPIRED_AUTHORIZATIONS:
        return "expired"
    if authorization == "OUT_OF_COMPLIANCE":
        return "out_of_compliance"
    if registration == "COMPLETED":
        return "registered"
    if registration in REGISTERING:
        return "registering"
    if registration in ("NOT_REGISTERED", "FAILED"):
        return "unregistered"
    return "unknown"


def license_tier_from(licensing: dict) -> str | None:
    """"CML_Enterprise" -> "enterprise", "CML_NotForResale" -> "not_for_resale"."""
    active = (licensing.get("product_license") or {}).get("active")
    if not active:
        return None
    name = active.removeprefix("CML_")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _health_issues(health: dict) -> tuple[str, ...]:
    issues = []
    if health.get("is_licensed") is False:
        issues.append("not licensed")
    for key, value in (health.get("controller") or {}).items():
        if value is False and key != "valid":
            issues.append(f"controller: {key}")
    for compute_id, checks in (health.get("computes") or {}).items():
        name = checks.get("hostname") or compute_id
        for key, value in checks.items():
            if value is False and key not in ("valid", "is_controller"):
                issues.append(f"compute {name}: {key}")
    return tuple(issues)


def _usage(stats: dict) -> dict:
    """Totals from GET /system_stats: its "all" block, or the sum of its computes."""
    total = stats.get("all")
    if not total:
        computes = [c.get("stats") or {} for c in (stats.get("computes") or {}).values()]
        if not computes:
            return {}
        count = sum((c.get("cpu") or {}).get("count") or 0 for c in computes)
        total = {
            "cpu": {"count": count, "percent": sum((c.get("cpu") or {}).get("percent") or 0 for c in computes)
                    / max(len(computes), 1)},
            **{part: {key: sum((c.get(part) or {}).get(key) or 0 for c in computes) for key in ("used", "total")}
               for part in ("memory", "disk")},
            "dominfo": {key: sum((c.get("dominfo") or {}).get(key) or 0 for c in computes)
                        for key in ("running_nodes", "total_nodes")},
        }
    cpu, memory, disk, dominfo = (total.get(k) or {} for k in ("cpu", "memory", "disk", "dominfo"))

    def gb(value):
        return None if value is None else round(value / GIB, 2)

    return {
        "cpu_percent": None if cpu.get("percent") is None else round(float(cpu["percent"]), 1),
        "cpu_count": cpu.get("count"),
        "memory_used_gb": gb(memory.get("used")),
        "memory_total_gb": gb(memory.get("total")),
        "disk_used_gb": gb(disk.get("used")),
        "disk_total_gb": gb(disk.get("total")),
        "nodes_running": dominfo.get("running_nodes"),
        "nodes_total": dominfo.get("total_nodes"),
    }


def cml_system_status(*, url: str, username: str, password: str, tls_verify: bool = True,
                      timeout: float = HEALTH_TIMEOUT) -> CmlSystemStatus:
    """Reachability, version, licence, health and load of one CML controller.

    Never takes longer than `timeout` seconds. An unreachable, failing (5xx), slow or
    not-ready controller gives `cml_service_status="unavailable"` with `error` set.
    Raises CmlError only when retrying cannot help: kind `auth` (bad credentials),
    `incompatible` (unsupported CML version) or `insecure` (plain http refused, unreadable CA bundle).
    """
    started = time.monotonic()
    budget = Budget(timeout)

    def check() -> CmlSystemStatus:
        with cml_client(url=url, username=username, password=password,
                        tls_verify=tls_verify, timeout=timeout) as client:
            info = client.system_information or {}  # read by the client while connecting
            budget.apply(client)
            stats = client.get_system_stats()
            budget.apply(client)
            health = client.get_system_health()
            budget.apply(client)
            licensing = client.licensing.status()
        ready = bool(info.get("ready", True))
        return CmlSystemStatus(
            reachable=True,
            cml_service_status="available" if ready else "unavailable",
            version=info.get("version"),
            ready=ready,
            license_status=license_status_from(licensing),
            license_tier=license_tier_from(licensing),
            license_registration=(licensing.get("registration") or {}).get("status"),
            license_authorization=(licensing.get("authorization") or {}).get("status"),
            health_valid=health.get("valid"),
            health_issues=_health_issues(health),
            error="" if ready else "CML reports it is not ready",
            elapsed_s=round(time.monotonic() - started, 3),
            **_usage(stats),
        )

    try:
        return run_bounded(check, seconds=timeout, url=url)
    except CmlError as exc:
        if exc.kind in (CmlError.AUTH, CmlError.INCOMPATIBLE, CmlError.INSECURE):
            raise
        return CmlSystemStatus(reachable=exc.status_code is not None, cml_service_status="unavailable",
                               error=str(exc), elapsed_s=round(time.monotonic() - started, 3))


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def cml_license_register(*, url: str, username: str, password: str, tls_verify: bool = True,
                         token: str, reregister: bool = False,
                         wait: float = 30.0, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Register CML with Smart Licensing using `token`; wait up to `wait` s for the outcome.

    Returns the licence status word (see license_status_from). A registration CML reports as
    FAILED raises CmlError(kind="refused"); the token never appears in messages.
    """
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        try:
            client.licensing.register(token=token, reregister=reregister)
        except CML_EXCEPTIONS as exc:  # translated here so that the token is scrubbed from the message
            error = cml_error_from(exc, url=url)
            raise CmlError(_scrub(str(error), token), kind=error.kind, url=url, status_code=error.status_code) from None
        deadline = time.monotonic() + wait
        while True:
            licensing = client.licensing.status()
            registration = licensing.get("registration") or {}
            if registration.get("status") not in REGISTERING or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    if registration.get("status") == "FAILED":
        failure = (registration.get("register_time") or {}).get("failure") or "registration failed"
        raise CmlError(f"CML at {url} could not register: {_scrub(str(failure), token)}", kind=CmlError.REFUSED,
                       url=url)
    return license_status_from(licensing)


def cml_license_deregister(*, url: str, username: str, password: str, tls_verify: bool = True,
                           timeout: float = DEFAULT_TIMEOUT) -> str:
    """Deregister CML from Smart Licensing; returns the licence status word afterwards."""
    with cml_client(url=url, username=username, password=password, tls_verify=tls_verify, timeout=timeout) as client:
        client.licensing.deregister()
        return license_status_from(client.licensing.status())
