"""Who may do what: every endpoint of the URLconf under /api walked with anonymous, every role, another
instructor, an admin's key narrowed to instructor, an expired key and a revoked key, against the matrix of
apps.api.permissions (docs/security.md); how API keys and sessions authenticate; CSRF."""

import hashlib
import json
import re
from types import SimpleNamespace
from datetime import timedelta
from typing import Callable, NamedTuple

import pytest
from django.middleware.csrf import get_token
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.views import APIView

from apps.audit.models import AuditEvent
from apps.workers.services import worker_drain, worker_template_create, worker_transition
from apps.api.permissions import RolePermission
from apps.api.models import ApiKey
from apps.sessions.models import Session
from apps.identity.services import api_key_create, api_key_revoke
from tests.conftest import client_for
from tests.factories import TOPOLOGY, LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


ANON, ADMIN, OPERATOR, INSTRUCTOR, OTHER = "anonymous", "admin", "operator", "instructor", "instructor-not-owner"
NARROWED, EXPIRED, REVOKED = "admin-key-with-role-instructor", "expired-key", "revoked-key"
COLUMNS = (ANON, ADMIN, OPERATOR, INSTRUCTOR, OTHER, NARROWED, EXPIRED, REVOKED)
CLIENT_FIXTURES = {
    ANON: "anon_client",
    ADMIN: "admin_client",
    OPERATOR: "operator_client",
    INSTRUCTOR: "instructor_client",
    OTHER: "other_instructor_client",
    NARROWED: "narrowed_admin_client",
    EXPIRED: "expired_key_client",
    REVOKED: "revoked_key_client",
}
REDIRECT = "3xx"  # the browser sign-in endpoints (apps.identity): a redirect whoever asks
UNKNOWN_SESSION = "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"


@pytest.fixture
def narrowed_admin_client(admin_user):
    """An admin's key that carries the instructor role: it must act as an instructor (not the owner)."""
    _, raw = api_key_create(user=admin_user, actor="tests", role="instructor")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


@pytest.fixture
def expired_key_client(admin_user):
    api_key, raw = api_key_create(user=admin_user, actor="tests", expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


@pytest.fixture
def revoked_key_client(admin_user):
    client = client_for(admin_user)
    api_key_revoke(api_key=ApiKey.objects.get(key_hash=hashlib.sha256(client.raw_key.encode()).hexdigest()),
                   actor="tests")
    return client


def _worker(state):
    def make(owner):
        worker = WorkerFactory()
        return worker_transition(worker=worker, to=state, actor="tests")

    return make


def _drained_worker(owner):
    return worker_drain(worker=_worker("running")(owner), actor="tests")


def _template(owner):
    return worker_template_create(actor="tests", data={"name": "tpl", "instance_type": "m5zn.metal", "cpu_cores": 48,
                                                      "memory_gb": 192, "storage_gb": 500, "max_nodes": 100})


def _definition(owner):
    return LabletDefinitionFactory(created_by=owner)


def _instance(state):
    # Every instance belongs to `instructor` (the owner); `instructor-not-owner` is another instructor.
    return lambda owner: instance_in(state, created_by=owner)


def _webhook(owner):
    from apps.webhooks.services import webhook_subscription_create

    return webhook_subscription_create(actor="tests", url="https://93.184.216.34/hook")  # a public IP literal: no DNS


def _owners_key(owner):
    return api_key_create(user=owner, actor="tests", name="owners")[0]


def _anonymous_session(owner):
    """A waiting session of an anonymous client (no worker in its pool)."""
    from apps.sessions.selectors import Principal
    from apps.sessions.services import session_create

    return session_create(principal=Principal(user_id=None, actor="anonymous@127.0.0.1"))


def _active_anonymous_session(owner):
    from tests.factories import placeable_worker

    placeable_worker(session_pool="default")
    session = _anonymous_session(owner)
    assert session.status == "active"
    return session


def _session_header(session):
    return {"HTTP_X_SESSION_ID": str(session.pk)}


def _new_worker(obj):
    return {"name": "cml-worker-new"}


def _new_definition(obj):
    return {
        "name": "new-lab",
        "version": "1.0.0",
        "cml_lab_yaml": TOPOLOGY,
        "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10, "node_count": 2},
    }


def _new_instance(definition):
    start = timezone.now() + timedelta(hours=1)
    return {"definition_id": definition.public_id, "owner_id": "student-new", "timeslot_start": start.isoformat()}


def _new_roster(definition):
    return {**_new_instance(definition), "owner_ids": ["student-a", "student-b"]}


def _preview(definition):
    start = timezone.now() + timedelta(hours=1)
    return {"definition_id": definition.public_id, "timeslot_start": start.isoformat(), "count": 2}


class E(NamedTuple):
    """One endpoint and method: the status each column gets. `anon` defaults to 401; the expired and
    revoked keys get 401 unless the view reads no credentials at all (`ignores_credentials`)."""

    method: str
    path: str
    expected: dict
    make: Callable | None = None  # builds the object the request acts on (given the owning instructor)
    body: Callable | None = None
    headers: dict | Callable | None = None  # or a function of the object
    ignores_credentials: bool = False
    writes: bool | None = None  # does a success change something (journalled)? default: not a GET
    hidden: bool = False  # answers as a path with no view (404) to all but its roles, whatever the credentials

    def status(self, column):
        if column == ANON:
            return self.expected.get(ANON, 401)
        if column == NARROWED:
            return self.expected[OTHER]  # the key's role is instructor, and it is not the owner
        if column in (EXPIRED, REVOKED):
            return self.expected.get(ANON, 401) if self.ignores_credentials or self.hidden else 401
        return self.expected[column]


def R(admin, operator, instructor, other=None, anon=401) -> dict:
    return {ADMIN: admin, OPERATOR: operator, INSTRUCTOR: instructor, OTHER: instructor if other is None else other,
            ANON: anon}


def EVERYONE(status, anon=None) -> dict:
    return R(status, status, status, anon=status if anon is None else anon)


STAFF_ONLY, ADMIN_ONLY = (lambda s: R(s, s, 403)), (lambda s: R(s, 403, 403))
TEACHING = lambda s: R(s, 403, s)  # noqa: E731
OWNED = lambda s: R(s, 403, s, other=404)  # noqa: E731  instructors act only on the instances they created
# Definitions are read by everyone, changed by their owner and admins: another instructor's change is 403.
OWN_DEFINITION = lambda s: R(s, 403, s, other=403)  # noqa: E731
ANONYMOUS_SESSION = lambda s: R(s, s, 404, anon=s)  # noqa: E731  an anonymous client's session: no user's key sees it
STAFF_ONLY_ELSE_404 = lambda s: R(s, s, 404, anon=404)  # noqa: E731

# Objects are created fresh for every cell, in the state the verb needs.
ENDPOINTS = [
    E("GET", "/api/workers", EVERYONE(200, anon=401)),
    E("POST", "/api/workers", STAFF_ONLY(201), body=_new_worker),
    E("GET", "/api/workers/{id}", EVERYONE(200, anon=401), _worker("running")),
    E("DELETE", "/api/workers/{id}", STAFF_ONLY(202), _worker("running")),
    E("PATCH", "/api/workers/{id}", STAFF_ONLY(200), _worker("running"), lambda obj: {"capacity": {"max_nodes": 50}}),
    E("POST", "/api/workers/{id}/start", STAFF_ONLY(200), _worker("stopped")),
    E("POST", "/api/workers/{id}/stop", STAFF_ONLY(200), _worker("running")),
    E("POST", "/api/workers/{id}/drain", STAFF_ONLY(200), _worker("running")),
    E("POST", "/api/workers/{id}/undrain", STAFF_ONLY(200), _drained_worker),
    E("POST", "/api/workers/{id}/sync", STAFF_ONLY(200), _worker("running")),
    E("POST", "/api/workers/{id}/license", STAFF_ONLY(200), _worker("running"), lambda obj: {"token": "tok", "reregister": True}),
    E("DELETE", "/api/workers/{id}/license", STAFF_ONLY(204), _worker("running")),
    E("GET", "/api/worker-templates", STAFF_ONLY(200)),
    E("POST", "/api/worker-templates", STAFF_ONLY(201), body=lambda obj: {
        "name": "tpl-new", "instance_type": "m5zn.metal", "cpu_cores": 48, "memory_gb": 192, "storage_gb": 500,
        "max_nodes": 100}),
    E("GET", "/api/worker-templates/{id}", STAFF_ONLY(200), _template),
    E("PUT", "/api/worker-templates/{id}", STAFF_ONLY(200), _template, lambda obj: {"cost_per_hour": "4.5"}),
    E("GET", "/api/lablet-definitions", EVERYONE(200, anon=401)),
    E("POST", "/api/lablet-definitions", TEACHING(201), body=_new_definition),
    E("GET", "/api/lablet-definitions/{id}", EVERYONE(200, anon=401), _definition),
    E("PUT", "/api/lablet-definitions/{id}", OWN_DEFINITION(200), _definition, lambda obj: {"description": "updated"}),
    E("DELETE", "/api/lablet-definitions/{id}", OWN_DEFINITION(204), _definition),
    # The definition has no reference worker to sync against: allowed roles get 422.
    E("POST", "/api/lablet-definitions/{id}/sync", OWN_DEFINITION(422), _definition),
    E("GET", "/api/lablet-instances", EVERYONE(200, anon=401)),
    E("POST", "/api/lablet-instances", TEACHING(201), _definition, _new_instance),
    E("GET", "/api/lablet-instances/{id}", R(200, 200, 200, other=404), _instance("pending")),
    E("POST", "/api/lablet-instances/{id}/start-collection", OWNED(200), _instance("running")),
    E("POST", "/api/lablet-instances/{id}/start-grading", OWNED(200), _instance("collecting")),
    E("POST", "/api/lablet-instances/{id}/grading-result", OWNED(200), _instance("grading"),
      lambda obj: {"score": 8, "max_score": 10}),
    E("POST", "/api/lablet-instances/{id}/activity", OWNED(204), _instance("running"), writes=False),  # a heartbeat
    E("POST", "/api/lablet-instances/{id}/extend", OWNED(200), _instance("pending"), lambda obj: {"minutes": 30}),
    E("POST", "/api/lablet-instances/{id}/terminate", OWNED(200), _instance("running")),
    E("POST", "/api/lablet-instances/bulk", TEACHING(201), _definition, _new_roster),
    E("GET", "/api/lablet-instances/{id}/student-link", R(200, 200, 200, other=404), _instance("running")),
    E("POST", "/api/lablet-instances/{id}/student-link", OWNED(201), _instance("running")),
    E("DELETE", "/api/lablet-instances/{id}/student-link", OWNED(204), _instance("running"), writes=False),
    E("PATCH", "/api/lablet-instances/{id}/priority", OWNED(200), _instance("pending"), lambda obj: {"priority": 8}),
    E("POST", "/api/scheduler/preview", EVERYONE(200, anon=401), _definition, _preview, writes=False),  # a dry run
    E("GET", "/api/scheduler/status", EVERYONE(200, anon=401)),
    E("GET", "/api/audit/events", STAFF_ONLY(200)),
    E("POST", "/api/audit/verify", STAFF_ONLY(200)),  # the check itself is journalled
    E("GET", "/api/audit/chain-root", STAFF_ONLY(200)),
    E("GET", "/api/webhooks", ADMIN_ONLY(200)),
    E("POST", "/api/webhooks", ADMIN_ONLY(201), body=lambda obj: {"url": "https://93.184.216.34/hook"}),
    E("GET", "/api/webhooks/{id}", ADMIN_ONLY(200), _webhook),
    E("PATCH", "/api/webhooks/{id}", ADMIN_ONLY(200), _webhook, lambda obj: {"description": "changed"}),
    E("DELETE", "/api/webhooks/{id}", ADMIN_ONLY(204), _webhook),
    E("GET", "/api/webhooks/{id}/deliveries", ADMIN_ONLY(200), _webhook),
    # Every user manages only their own keys: another's key is 404, whatever the role.
    E("GET", "/api/auth/api-keys", EVERYONE(200, anon=401)),
    E("POST", "/api/auth/api-keys", EVERYONE(201, anon=401), body=lambda obj: {"name": "walk"}),
    E("POST", "/api/auth/api-keys/revoke/{sha256}", R(404, 404, 200, other=404), _owners_key),
    E("POST", "/api/auth/api-keys/purge", EVERYONE(200, anon=401)),
    E("GET", "/api/auth/me", EVERYONE(200, anon=401)),
    E("GET", "/api/auth/login", EVERYONE(REDIRECT), ignores_credentials=True),
    E("GET", "/api/auth/callback", EVERYONE(REDIRECT), ignores_credentials=True),
    E("GET", "/api/auth/logout", EVERYONE(405), ignores_credentials=True),  # POST only: a link logs no one out
    E("POST", "/api/auth/logout", EVERYONE(REDIRECT), ignores_credentials=True, writes=False),
    # Remote-lab: any credential, or none from SESSION_ANONYMOUS_NETWORKS (the test client is 127.0.0.1). A
    # session is its principal's: here an anonymous client's waiting session, which admins and operators
    # see too, users' keys never (404, as an unknown id: tests/sessions/test_access.py). A waiting session
    # is 423 on /lab/* to whoever may see it. active-session (an anonymous one is active) and debug/health
    # are admin and operator only, 404 to the rest.
    E("POST", "/api/remote-lab/session", EVERYONE(201)),
    E("GET", "/api/remote-lab/session/{session_id}", ANONYMOUS_SESSION(200), _anonymous_session),
    E("DELETE", "/api/remote-lab/session/{session_id}", ANONYMOUS_SESSION(204), _anonymous_session),
    E("POST", "/api/remote-lab/session/heartbeat", ANONYMOUS_SESSION(204), _anonymous_session, writes=False,
      headers=_session_header),
    E("POST", "/api/remote-lab/lab", ANONYMOUS_SESSION(423), _anonymous_session, headers=_session_header),
    E("GET", "/api/remote-lab/lab", ANONYMOUS_SESSION(423), _anonymous_session, headers=_session_header),
    E("DELETE", "/api/remote-lab/lab", ANONYMOUS_SESSION(423), _anonymous_session, headers=_session_header),
    E("POST", "/api/remote-lab/lab/release", ANONYMOUS_SESSION(423), _anonymous_session, headers=_session_header),
    E("GET", "/api/remote-lab/lab/devices", ANONYMOUS_SESSION(423), _anonymous_session, headers=_session_header),
    E("GET", "/api/remote-lab/active-session", STAFF_ONLY_ELSE_404(200), _active_anonymous_session),
    E("GET", "/api/remote-lab/debug/health", STAFF_ONLY_ELSE_404(200), hidden=True),
    E("GET", "/api/remote-lab/healthz", EVERYONE(204), ignores_credentials=True),
    E("GET", "/api/events/stream", EVERYONE(200, anon=401)),
    E("GET", "/api/diagnostics/health", EVERYONE(200), ignores_credentials=True),
    E("GET", "/api/diagnostics/ready", EVERYONE(200), ignores_credentials=True),
    # The OpenAPI document and its viewers read the session only (a key there is ignored).
    E("GET", "/api/openapi.json", EVERYONE(200), ignores_credentials=True),
    E("GET", "/api/docs", EVERYONE(200), ignores_credentials=True),
    E("GET", "/api/redoc", EVERYONE(200), ignores_credentials=True),
]

CELLS = [pytest.param(endpoint, column, id=f"{endpoint.method} {endpoint.path} as {column}")
         for endpoint in ENDPOINTS for column in COLUMNS]


def _is_drf(path: str) -> bool:
    match = get_resolver().resolve(path.split("?")[0])
    cls = getattr(match.func, "cls", None)
    return cls is not None and issubclass(cls, APIView)


@pytest.mark.parametrize("endpoint, column", CELLS)
def test_it_walks_every_endpoint_with_every_role(request, monkeypatch, instructor_user, endpoint, column):
    # The event stream closes its database connection once it has authenticated (a stream lasts hours);
    # in-process that connection is the test's own, inside its transaction: keep it open here.
    monkeypatch.setattr("apps.events.stream._close_connection", lambda: None)
    # What a request enqueues and awaits (the syncs: apps.core.awaited) runs here, at once, as a cluster would.
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)
    client = request.getfixturevalue(CLIENT_FIXTURES[column])
    status = endpoint.status(column)
    obj = endpoint.make(instructor_user) if endpoint.make else None
    url = endpoint.path.format(id=getattr(obj, "public_id", None), sha256=getattr(obj, "key_hash", None),
                               session_id=obj.pk if isinstance(obj, Session) else UNKNOWN_SESSION)
    payload = endpoint.body(obj) if endpoint.body else None
    headers = endpoint.headers(obj) if callable(endpoint.headers) else endpoint.headers
    audit_before = AuditEvent.objects.count()

    response = client.generic(endpoint.method, url, json.dumps(payload) if payload is not None else "",
                              content_type="application/json", **(headers or {}))

    if status == REDIRECT:
        assert 300 <= response.status_code < 400, response.content
        return
    assert response.status_code == status, response.content
    if status == 401:
        assert response["Content-Type"].startswith("application/problem+json")
        assert response["WWW-Authenticate"]
    if status >= 400:
        assert response.json()["status"] == status
    refused = AuditEvent.objects.filter(event_type="api_call.refused").count()
    wrote = AuditEvent.objects.count() - refused > audit_before
    writes = endpoint.method != "GET" if endpoint.writes is None else endpoint.writes
    assert wrote == (writes and status < 300), "a change is audited; a refusal or a read changes nothing"
    refusal = endpoint.method != "GET" and status >= 400 and status not in (401, 429) and _is_drf(url)
    # ... by an authenticated principal; an anonymous caller's is counted in a metric instead (anyone can send it)
    assert refused == (refusal and column != ANON), "a refused change is journalled once"


def _api_routes(patterns=None, prefix=""):
    """(method, path template) of every view under /api in the URLconf."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_routes(pattern.url_patterns, route)
            continue
        assert isinstance(pattern, URLPattern)
        path = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.replace("^", "").replace("$", ""))
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
        if not path.startswith("/api/"):
            continue
        callback = pattern.callback
        if getattr(callback, "actions", None):  # a viewset route: its method → action map
            methods = [m for m in callback.actions if m not in ("head", "options")]
        else:
            view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
            methods = [m for m in ("get", "post", "put", "patch", "delete") if view_class and hasattr(view_class, m)]
            methods = methods or ["get"]  # a plain function view (the event stream)
        for method in methods:
            yield method.upper(), path


def _drf_views():
    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns)
            elif isinstance(getattr(pattern.callback, "cls", None), type) and issubclass(pattern.callback.cls, APIView):
                yield str(pattern.pattern), pattern.callback.cls

    return list(walk(get_resolver().url_patterns))


def test_the_walk_covers_every_api_endpoint_of_the_urlconf():
    routes = set(_api_routes())
    table = {(e.method, re.sub(r"\{\w+\}", "{}", e.path)) for e in ENDPOINTS}
    normalized = {(method, re.sub(r"\{\w+\}", "{}", path)) for method, path in routes}

    assert sorted(normalized - table) == [], "endpoints missing from the table (and from docs/security.md)"
    assert sorted(table - normalized) == [], "table rows with no endpoint"
    assert len(table) == len(ENDPOINTS), "one row per endpoint and method"


def test_every_api_view_decides_access_through_the_permissions_module():
    views = _drf_views()
    assert len(views) > 30
    for route, view in views:
        classes = view.permission_classes
        assert classes and all(issubclass(c, RolePermission) for c in classes), (route, classes)
        policies = {getattr(view, "policy", None) or c.policy for c in classes}
        assert None not in policies, f"{route}: {view.__name__} names no policy"


def test_a_view_without_a_policy_is_refused_to_everyone(admin_user):
    class Unpolicied(APIView):
        def get(self, request):
            raise AssertionError("never reached")

    request = SimpleNamespace(user=admin_user, method="GET", META={"REMOTE_ADDR": "127.0.0.1"})
    assert RolePermission().has_permission(request, Unpolicied()) is False


def test_instructors_list_only_the_instances_they_created(
    admin_client, operator_client, instructor_client, other_instructor_client, instructor_user, other_instructor
):
    mine = instance_in("pending", created_by=instructor_user)
    theirs = instance_in("running", created_by=other_instructor)

    def ids(client):
        return {row["id"] for row in client.get("/api/lablet-instances").json()["lablet_instances"]}

    assert ids(instructor_client) == {mine.public_id}
    assert ids(other_instructor_client) == {theirs.public_id}
    assert ids(admin_client) == {mine.public_id, theirs.public_id}
    assert ids(operator_client) == {mine.public_id, theirs.public_id}


def test_a_bearer_api_key_authenticates_like_x_api_key(operator_user):
    _, raw = api_key_create(user=operator_user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert client.get("/api/workers").status_code == 200
    assert client.post("/api/workers", {"name": "via-bearer"}, format="json").status_code == 201
    assert AuditEvent.objects.filter(event_type="worker.created", actor__contains=raw[:10]).exists()


def test_a_revoked_key_is_refused(operator_user):
    api_key, raw = api_key_create(user=operator_user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    assert client.get("/api/workers").status_code == 200

    api_key_revoke(api_key=api_key, actor="tests")

    response = client.get("/api/workers")
    assert response.status_code == 401
    assert response["WWW-Authenticate"]
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert bearer.get("/api/workers").status_code == 401


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_a_wrong_key_is_refused(operator_user, header):
    _, raw = api_key_create(user=operator_user, actor="tests")
    wrong = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    client = APIClient()
    client.credentials(**{header: wrong if header == "HTTP_X_API_KEY" else f"Bearer {wrong}"})

    response = client.get("/api/workers")

    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")


def test_an_inactive_users_key_is_refused(operator_user, operator_client):
    assert operator_client.get("/api/workers").status_code == 200
    operator_user.is_active = False
    operator_user.save(update_fields=["is_active"])

    assert operator_client.get("/api/workers").status_code == 401


def test_only_the_sha256_of_a_key_is_stored(operator_user):
    api_key, raw = api_key_create(user=operator_user, actor="tests", name="ci")

    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert row["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert all(raw not in str(value) for value in row.values())
    audit_rows = json.dumps(list(AuditEvent.objects.values("actor", "resource_id", "metadata")), default=str)
    assert raw not in audit_rows


def test_a_session_login_reads_the_api(admin_user, instructor_user):
    forced = APIClient()
    forced.force_login(instructor_user)
    assert forced.get("/api/lablet-instances").status_code == 200

    logged_in = APIClient()
    assert logged_in.login(username=admin_user.username, password="pw-" + admin_user.username)
    assert logged_in.get("/api/workers").status_code == 200


def test_a_session_write_without_a_csrf_token_is_refused(operator_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator_user)

    response = client.post("/api/workers", {"name": "csrf-less"}, format="json")

    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/problem+json")
    assert not AuditEvent.objects.filter(event_type="worker.created").exists()


def test_a_session_write_with_the_csrf_token_is_accepted(operator_user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator_user)
    page = RequestFactory().get("/")
    token = get_token(page)  # what a page of ours renders, with the cookie that goes with it
    client.cookies["csrftoken"] = page.META["CSRF_COOKIE"]

    response = client.post("/api/workers", {"name": "with-csrf"}, format="json", HTTP_X_CSRFTOKEN=token)

    assert response.status_code == 201, response.content


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_a_key_write_needs_no_csrf_token(operator_user, header):
    _, raw = api_key_create(user=operator_user, actor="tests")
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(**{header: raw if header == "HTTP_X_API_KEY" else f"Bearer {raw}"})

    assert client.post("/api/workers", {"name": "key-no-csrf"}, format="json").status_code == 201
