"""API handlers: system information, authentication, users, resource usage, health, licensing.

Every handler is `fn(ctl, *, query, body, authorization, **path_groups)` and returns the
JSON payload, NO_CONTENT (204) or Text; it raises SimError for an error answer.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import timedelta

from .controller import EXPIRED_AUTHORIZATIONS, CmlController
from .model import NO_CONTENT, SimError, now_iso

GIB = 1024**3
ENTERPRISE_TIERS = frozenset({"CML_Enterprise", "CML_Education", "CML_Internal", "CML_NotForResale"})
DEFAULT_SSMS = "https://smartreceiver.cisco.com/licservice/license"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def system_information(ctl: CmlController, **_):
    return {"version": ctl.version, "ready": True, "allow_ssh_pubkey_auth": False, "oui": "52:54:00", "features": {}}


def authenticate(ctl: CmlController, *, body, **_):
    try:
        credentials = json.loads(body or b"{}")
    except ValueError:
        raise SimError(400, "Bad request: expected a JSON body.") from None
    if (ctl.faults.auth_fail or not isinstance(credentials, dict)
            or credentials.get("username") != ctl.username or credentials.get("password") != ctl.password):
        raise SimError(403, "Authentication failed!")
    token = ".".join([_b64({"alg": "HS256", "typ": "JWT"}),
                      _b64({"sub": ctl.user_id, "iat": int(time.time()), "jti": secrets.token_hex(8)}),
                      secrets.token_urlsafe(32)])
    ctl.tokens.add(token)
    return token


def authentication(ctl: CmlController, *, authorization, **_):
    return {"id": ctl.user_id, "username": ctl.username, "admin": True, "token": authorization.removeprefix("Bearer ")}


def logout(ctl: CmlController, *, authorization, **_):
    ctl.tokens.discard(authorization.removeprefix("Bearer "))
    return True


def users(ctl: CmlController, **_):
    return [{"id": ctl.user_id, "username": ctl.username, "fullname": "", "email": "", "admin": True,
             "labs": list(ctl.labs), "groups": [], "resource_pool": None, "opt_in": True}]


def empty_list(ctl: CmlController, **_):
    return []


def system_stats(ctl: CmlController, **_):
    running = ctl.running_nodes()
    booting = sum(1 for n in running if n.state != "BOOTED")
    cpu = ctl.cpu_percent_override
    if cpu is None:  # an idle controller, a booting node busy on one core, a booted one on a quarter
        cpu = min(100.0, round(2.0 + 100.0 * (0.25 * (len(running) - booting) + booting) / ctl.cpu_count, 1))
    all_nodes = sum(len(lab.nodes) for lab in ctl.labs.values())
    memory_total = ctl.memory_gb * GIB
    memory_used = min(memory_total, 4 * GIB + sum(n.ram_mb for n in running) * 1024**2)
    disk_total = ctl.disk_gb * GIB
    disk_used = min(disk_total, 40 * GIB + all_nodes * GIB)
    stats = {
        "cpu": {"count": ctl.cpu_count, "percent": cpu, "load": [round(cpu * ctl.cpu_count / 100, 2)] * 3,
                "model": "Simulated CPU", "predicted": ctl.cpu_count},
        "memory": {"total": memory_total, "free": memory_total - memory_used, "used": memory_used},
        "disk": {"total": disk_total, "free": disk_total - disk_used, "used": disk_used},
        "dominfo": {"allocated_cpus": sum(n.cpus for n in running),
                    "allocated_memory": sum(n.ram_mb for n in running),
                    "total_nodes": all_nodes, "total_orphans": 0, "running_nodes": len(running),
                    "running_orphans": 0},
    }
    return {
        "all": {**stats, "controller_disk": stats["disk"]},
        "computes": {ctl.compute_id: {"hostname": ctl.hostname, "is_controller": True, "stats": stats}},
    }


def system_health(ctl: CmlController, **_):
    licensed = ctl.authorization == "IN_COMPLIANCE"
    compute = {"kvm_vmx_enabled": True, "enough_cpus": True, "refplat_images_available": True,
               "lld_connected": True, "lld_synced": True, "libvirt": True, "fabric": True, "device_mux": True,
               "docker_shim": True, "valid": True, "is_controller": True, "hostname": ctl.hostname,
               "admission_state": "READY"}
    controller = {"core_connected": True, "nodes_loaded": True, "images_loaded": True, "valid": True}
    return {"valid": licensed, "is_licensed": licensed, "is_enterprise": ctl.license_tier in ENTERPRISE_TIERS,
            "computes": {ctl.compute_id: compute}, "controller": controller}


def licensing(ctl: CmlController, **_):
    registered = ctl.registration == "COMPLETED"
    authorization = ctl.authorization
    attempt = {"succeeded": ctl.registered_at, "attempted": ctl.registered_at, "scheduled": None, "status": None,
               "failure": ctl.registration_failure,
               "success": "FAILED" if ctl.registration_failure else ("SUCCESS" if registered else None)}
    expires_in = timedelta(days=-1) if authorization in EXPIRED_AUTHORIZATIONS else timedelta(days=90)
    return {
        "registration": {
            "status": ctl.registration, "smart_account": "LabManager Simulated" if registered else None,
            "virtual_account": "Default" if registered else None, "instance_name": ctl.hostname,
            "register_time": attempt, "renew_time": attempt,
            "expires": now_iso(timedelta(days=365)) if registered else None,
            "export_control": "ALLOWED" if registered else None,
        },
        "authorization": {"status": authorization, "renew_time": attempt, "expires": now_iso(expires_in)},
        "reservation_mode": False,
        "features": [
            {"id": "regid.2019-10.com.cisco.CML_BASE,1.0_sim", "name": f"{ctl.license_tier} base",
             "description": "Cisco Modeling Labs base licence", "in_use": 1, "min": 1, "max": 1,
             "status": authorization, "version": "1.0"},
            {"id": "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_sim", "name": "CML expansion nodes",
             "description": "Running nodes", "in_use": ctl.max_nodes, "min": 0, "max": 300,
             "status": authorization, "version": "1.0"},
        ],
        "transport": {"ssms": DEFAULT_SSMS, "proxy": {"server": None, "port": None}, "default_ssms": DEFAULT_SSMS},
        "udi": {"hostname": ctl.hostname, "product_uuid": ctl.product_uuid},
        "product_license": {"active": ctl.license_tier, "is_enterprise": ctl.license_tier in ENTERPRISE_TIERS},
    }


def licensing_register(ctl: CmlController, *, body, **_):
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token or len(token) > 256 or "\0" in token:
        raise SimError(400, "Bad input: token must be a non-empty string.")
    if ctl.registration == "COMPLETED" and not data.get("reregister"):
        raise SimError(400, "The product is already registered; set reregister to register again.")
    if "invalid" in token.lower():  # the simulator's stand-in for a token Smart Licensing rejects
        ctl.registration, ctl.registered_at = "FAILED", None
        ctl.registration_failure = f"The ID Token '{token}' is not valid."
    else:
        ctl.registration, ctl.registered_at, ctl.registration_failure = "COMPLETED", now_iso(), None
    return NO_CONTENT


def licensing_deregister(ctl: CmlController, **_):
    ctl.registration, ctl.registered_at, ctl.registration_failure = "NOT_REGISTERED", None, None
    return NO_CONTENT
