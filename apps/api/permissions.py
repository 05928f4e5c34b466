"""Who may do what: the policy matrix and `allows`, the one decision that API views, dashboard pages
(apps.api.pages) and the live streams make. docs/security.md prints this matrix; tests/test_roles.py walks
every endpoint under /api with every role against it. Three page-only policies are defined beside their
pages, outside this matrix: FLEET_PAGE and SESSIONS_PAGE (apps.api.pages) and DEFINITION_FORMS
(apps.lablets.views.definitions). The Django admin keeps Django's own staff check.

Every API view names a `policy` below; `RolePermission` (the DRF default) reads it. A view without a
policy is refused to everyone (deny by default). Safe methods (GET, HEAD, OPTIONS) need a `read` role,
every other method a `write` role. Rules about single objects are here too (`privileged`): admins and
operators see every lablet instance, session and live event; instructors only their own; and
`may_change_definition`: instructors change only the lablet definitions they own, admins all.

The roles of a request are `apps.api.roles.user_roles`: the user's groups, narrowed to the key's
role when the request came with an API key.
"""

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission

from apps.api.roles import ADMIN, INSTRUCTOR, OPERATOR, ROLES, has_role, user_roles

AUTHENTICATED = "authenticated"  # any signed-in user, with or without a role
ANY_ROLE = (ADMIN, OPERATOR, INSTRUCTOR)
STAFF = (ADMIN, OPERATOR)
TEACHING = (ADMIN, INSTRUCTOR)


@dataclass(frozen=True)
class Policy:
    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    public: bool = False  # anyone, no credentials needed (probes, the OpenAPI document)
    # The name of a setting listing networks whose clients may come without credentials ("": none).
    anonymous_networks_setting: str = ""

    def roles_for(self, method: str) -> tuple[str, ...]:
        return self.read if method in SAFE_METHODS else self.write


# --- the matrix -------------------------------------------------------------------------------------
WORKERS = Policy("workers", read=ANY_ROLE, write=STAFF)
WORKER_TEMPLATES = Policy("worker-templates", read=STAFF, write=STAFF)
LABLET_DEFINITIONS = Policy("lablet-definitions", read=ANY_ROLE, write=TEACHING)
LABLET_INSTANCES = Policy("lablet-instances", read=ANY_ROLE, write=TEACHING)  # + privileged() per row
LABLET_INSTANCE_WRITES = Policy("lablet-instance-writes", read=TEACHING, write=TEACHING)  # bulk, priority: no GET
SCHEDULER = Policy("scheduler", read=ANY_ROLE, write=ANY_ROLE)  # the only POST is a dry run
AUDIT = Policy("audit", read=STAFF, write=STAFF)  # the write is the verification, journalled
WEBHOOKS = Policy("webhooks", read=(ADMIN,), write=(ADMIN,))
API_KEYS = Policy("api-keys", read=ANY_ROLE, write=ANY_ROLE)  # each user sees and changes only their own keys
EVENTS = Policy("events", read=ANY_ROLE)  # SSE and WebSocket; + privileged() per event
REMOTE_LAB = Policy("remote-lab", read=(AUTHENTICATED,), write=(AUTHENTICATED,),
                    anonymous_networks_setting="SESSION_ANONYMOUS_NETWORKS")  # + privileged() per session
METRICS = Policy("metrics", read=STAFF, anonymous_networks_setting="METRICS_ALLOWED_NETWORKS")
SIGNED_IN = Policy("signed-in", read=(AUTHENTICATED,), write=(AUTHENTICATED,))  # GET /api/auth/me
PUBLIC = Policy("public", public=True)  # diagnostics, /api/openapi.json, /api/docs, /api/redoc

POLICIES = (WORKERS, WORKER_TEMPLATES, LABLET_DEFINITIONS, LABLET_INSTANCES, LABLET_INSTANCE_WRITES, SCHEDULER,
            AUDIT, WEBHOOKS, API_KEYS, EVENTS, REMOTE_LAB, METRICS, SIGNED_IN, PUBLIC)


def privileged(user) -> bool:
    """Sees and acts on every owned object (instances, sessions, live events), not only their own."""
    return has_role(user, *STAFF)


def may_change_definition(user, definition) -> bool:
    """A lablet definition is a shared catalogue (every role reads it) with an owner: a role that writes
    definitions (LABLET_DEFINITIONS) changes it only if it is the owner's, or the role is admin. Ownerless:
    admins only. The service layer (apps.lablets.services.definitions) enforces it for the API, the dashboard
    and the admin alike; the pages ask it to show or hide their buttons."""
    if not allows(LABLET_DEFINITIONS, user=user, method="POST"):
        return False
    return has_role(user, ADMIN) or (definition.owner_id is not None and definition.owner_id == user.pk)


def allows(policy: Policy, *, user, method: str = "GET", address: str | None = None) -> bool:
    """The whole decision for one request: `user` (may be anonymous) using `method` from `address`."""
    if policy.public:
        return True
    if user is not None and user.is_authenticated:
        roles = policy.roles_for(method)
        return AUTHENTICATED in roles or bool(user_roles(user) & set(roles))
    return anonymous_from_allowed_network(policy, address)


def anonymous_from_allowed_network(policy: Policy, address: str | None) -> bool:
    if not policy.anonymous_networks_setting:
        return False
    return address_in(address, getattr(settings, policy.anonymous_networks_setting))


def address_in(address: str | None, networks) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(tuple(networks)))


@lru_cache(maxsize=16)
def _networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


class RolePermission(BasePermission):
    """The DRF side of `allows`: the view's `policy` (function views: `requires(POLICY)`). No policy:
    refused (401 anonymous, 403 otherwise)."""

    message = "Your role does not allow this."
    policy: Policy | None = None

    def has_permission(self, request, view):
        policy = getattr(view, "policy", None) or self.policy
        if policy is None:
            return False
        return allows(policy, user=request.user, method=request.method, address=request.META.get("REMOTE_ADDR"))


@lru_cache(maxsize=None)
def requires(policy: Policy) -> type[RolePermission]:
    """A permission class bound to `policy`, for function views: `@permission_classes([requires(SIGNED_IN)])`."""
    return type(f"Requires{policy.name.title().replace('-', '')}", (RolePermission,), {"policy": policy})


class Public(RolePermission):
    """Anyone, no credentials needed: probes and drf-spectacular's views (SERVE_PERMISSIONS)."""

    policy = PUBLIC

    def has_permission(self, request, view):
        return True


__all__ = ["ADMIN", "OPERATOR", "INSTRUCTOR", "ROLES", "Policy", "RolePermission", "Public", "allows",
           "may_change_definition", "privileged", "requires"]
