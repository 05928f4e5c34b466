"""Who may use /api/remote-lab: anonymous clients only from SESSION_ANONYMOUS_NETWORKS (default loopback),
API keys (X-API-Key or Authorization: Bearer) from anywhere, each session tied to its principal (others
get 404 for it), and the API's own rate limit (SESSION_API_RATE_LIMIT, 429)."""

import hashlib

import pytest
from rest_framework.test import APIClient

from apps.sessions.models import Session
from tests.conftest import client_for
from tests.sessions.conftest import (BASE, OTHER_TOPOLOGY, TOPOLOGY, acquire, assert_problem, create, lab_call,
                                    status_of)

pytestmark = pytest.mark.django_db

FOREIGN_IP = "203.0.113.7"  # TEST-NET-3: in no network the tests allow
UNKNOWN_ID = "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"
# Every endpoint behind the access check, as (method, path, needs the X-Session-ID header).
GATED = [
    ("post", "/session", False),
    ("get", f"/session/{UNKNOWN_ID}", False),
    ("delete", f"/session/{UNKNOWN_ID}", False),
    ("post", "/session/heartbeat", True),
    ("post", "/lab", True),
    ("get", "/lab", True),
    ("delete", "/lab", True),
    ("post", "/lab/release", True),
    ("get", "/lab/devices", True),
    ("get", "/active-session", False),  # /debug/health answers as a path with no view (below)
]


def _call(client, method, path, with_header):
    headers = {"HTTP_X_SESSION_ID": UNKNOWN_ID} if with_header else {}
    return getattr(client, method)(f"{BASE}{path}", **headers)


# --- anonymous clients -----------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_an_anonymous_client_on_loopback_gets_an_unowned_session(worker, address):
    client = APIClient(REMOTE_ADDR=address)

    body = create(client)

    session = Session.objects.get(pk=body["session_id"])
    assert session.owner_id is None
    assert session.actor == f"anonymous@{address}"
    assert session.client_ip is not None


@pytest.mark.parametrize("method,path,with_header", GATED)
def test_an_anonymous_client_from_another_network_is_refused_401_everywhere(worker, method, path, with_header):
    client = APIClient(REMOTE_ADDR=FOREIGN_IP)

    body = assert_problem(_call(client, method, path, with_header), 401)

    assert "SESSION_ANONYMOUS_NETWORKS" in body["detail"]
    assert not Session.objects.exists()


def test_the_401_tells_the_client_how_to_authenticate(worker):
    response = APIClient(REMOTE_ADDR=FOREIGN_IP).post(f"{BASE}/session")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_liveness_probe_answers_anyone(db):
    assert APIClient(REMOTE_ADDR=FOREIGN_IP).get(f"{BASE}/healthz").status_code == 204


def test_the_anonymous_networks_come_from_the_setting(worker, settings):
    settings.SESSION_ANONYMOUS_NETWORKS = ["203.0.113.0/24"]

    assert create(APIClient(REMOTE_ADDR=FOREIGN_IP))["position"] == 0
    assert_problem(APIClient().post(f"{BASE}/session"), 401)  # loopback is no longer listed


def test_an_empty_network_list_admits_no_anonymous_client(worker, settings):
    settings.SESSION_ANONYMOUS_NETWORKS = []

    assert_problem(APIClient().post(f"{BASE}/session"), 401)


def test_a_bad_api_key_is_401_even_from_loopback(worker):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY="lm_not-a-real-key")

    assert_problem(client.post(f"{BASE}/session"), 401)
    assert not Session.objects.exists()


# --- API keys and bearer tokens ---------------------------------------------------------------------

def test_an_api_key_works_from_any_network_and_the_session_is_its_users(worker, instructor_user):
    client = APIClient(REMOTE_ADDR=FOREIGN_IP)
    client.credentials(HTTP_X_API_KEY=client_for(instructor_user).raw_key)

    session = Session.objects.get(pk=create(client)["session_id"])

    assert session.owner_id == instructor_user.pk
    assert session.actor.startswith(f"{instructor_user.username} (apikey:")
    assert session.client_ip == FOREIGN_IP
    assert status_of(client, session.pk).status_code == 200


def test_an_api_key_sent_as_a_bearer_token_works_like_x_api_key(worker, instructor_user):
    client = APIClient(REMOTE_ADDR=FOREIGN_IP)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_for(instructor_user).raw_key}")

    session_id = create(client)["session_id"]

    assert Session.objects.get(pk=session_id).owner_id == instructor_user.pk
    assert client.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=session_id).status_code == 204
    assert acquire(client, session_id).status_code == 200


@pytest.fixture
def jwt_issuer(settings):
    """A provider whose signing keys the test holds (tests/identity's Issuer, on 127.0.0.1): LabManager
    accepts the access tokens it signs."""
    from apps.identity.bearer import forget_synced_users
    from apps.identity.provider import forget_provider_caches
    from tests.identity.conftest import CLIENT_ID, Issuer

    forget_provider_caches(), forget_synced_users()
    issuer = Issuer()
    settings.OIDC_ISSUER, settings.OIDC_RP_CLIENT_ID = issuer.url, CLIENT_ID
    settings.OIDC_JWT_AUDIENCES, settings.OIDC_ROLE_CLIENTS, settings.OIDC_OP_JWKS_ENDPOINT = [], [], ""
    yield issuer
    issuer.stop()
    forget_provider_caches(), forget_synced_users()


def _jwt_client(issuer, username: str) -> APIClient:
    token = issuer.token(sub=f"sub-{username}", preferred_username=username, email=f"{username}@example.test",
                         realm_access={"roles": ["instructor"]})
    client = APIClient(REMOTE_ADDR=FOREIGN_IP)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_bearer_jwt_ties_the_session_to_the_tokens_user(worker, jwt_issuer):
    ana, ben = _jwt_client(jwt_issuer, "ana"), _jwt_client(jwt_issuer, "ben")

    session_id = create(ana)["session_id"]

    assert Session.objects.select_related("owner").get(pk=session_id).owner.username == "ana"
    assert status_of(ana, session_id).json()["status"] == "active"
    assert acquire(ana, session_id).status_code == 200
    assert_problem(status_of(ben, session_id), 404, "Session not found")
    assert_problem(lab_call(ben, "get", "/lab/devices", session_id), 404, "Session not found")


@pytest.fixture
def owned(instructor_client, worker):
    """An active session of instructor1 holding the lab."""
    session_id = create(instructor_client)["session_id"]
    assert acquire(instructor_client, session_id).status_code == 200
    return session_id


@pytest.mark.parametrize("stranger", ["other_instructor_client", "anon"])
def test_another_principal_gets_404_for_a_session_on_every_endpoint(request, owned, instructor_client, stranger):
    client = request.getfixturevalue(stranger)

    assert_problem(status_of(client, owned), 404, "Session not found")
    assert_problem(client.delete(f"{BASE}/session/{owned}"), 404, "Session not found")
    assert_problem(client.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=owned), 404, "Session not found")
    assert_problem(acquire(client, owned), 404, "Session not found")
    for method, path in [("get", "/lab"), ("get", "/lab/devices"), ("post", "/lab/release"), ("delete", "/lab")]:
        assert_problem(lab_call(client, method, path, owned), 404, "Session not found")

    # Nothing of the owner's changed: still active, still holding the lab.
    assert Session.objects.get(pk=owned).status == "active"
    body = lab_call(instructor_client, "get", "/lab", owned).json()
    assert (body["status"], body["ref_count"]) == ("running", 1)


def test_an_operator_sees_and_may_end_anyones_session(owned, operator_client):
    assert status_of(operator_client, owned).json()["status"] == "active"

    assert operator_client.delete(f"{BASE}/session/{owned}").status_code == 204
    assert Session.objects.get(pk=owned).status == "ended"


# --- anonymous sessions are the anonymous caller's alone (issue 19, item 2) -------------------------------

@pytest.fixture
def anonymous_lab(anon, worker):
    """An anonymous client's active session holding the lab."""
    session_id = create(anon)["session_id"]
    assert acquire(anon, session_id).status_code == 200
    return session_id


@pytest.fixture
def narrowed_admin_client(admin_user):
    """An admin's key that carries the instructor role: not privileged."""
    from apps.identity.services import api_key_create

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(user=admin_user, actor="tests", role="instructor")[1])
    return client


def _unknown_and(client, method, path, session_id, **kwargs):
    """The same request for an unknown session id and for `session_id`."""
    if "{id}" in path:
        return [getattr(client, method)(f"{BASE}{path.format(id=sid)}", **kwargs) for sid in (UNKNOWN_ID, session_id)]
    return [lab_call(client, method, path, sid, **kwargs) for sid in (UNKNOWN_ID, session_id)]


def _as_unknown(unknown, response):
    """`response` is the 404 of an unknown id: same status, type, title and detail (only trace_id and
    instance differ)."""
    assert_problem(response, 404, "Session not found")
    strip = lambda body: {k: v for k, v in body.items() if k not in ("trace_id", "instance")}  # noqa: E731
    assert strip(response.json()) == strip(unknown.json())
    assert response["Content-Type"] == unknown["Content-Type"]


@pytest.mark.parametrize("stranger", ["instructor_client", "narrowed_admin_client"])
def test_a_users_key_gets_404_for_an_anonymous_session_exactly_like_an_unknown_id(request, anon, anonymous_lab,
                                                                                  stranger):
    client = request.getfixturevalue(stranger)
    seen_before = Session.objects.get(pk=anonymous_lab).last_seen_at
    calls = [
        ("get", "/session/{id}", {}),
        ("post", "/session/heartbeat", {}),
        ("get", "/lab", {}),
        ("get", "/lab/devices", {}),
        ("post", "/lab/release", {}),
        ("delete", "/lab", {}),
        ("delete", "/session/{id}", {}),
    ]

    for method, path, kwargs in calls:
        _as_unknown(*_unknown_and(client, method, path, anonymous_lab, **kwargs))
    unknown, response = (acquire(client, sid, topology=OTHER_TOPOLOGY) for sid in (UNKNOWN_ID, anonymous_lab))
    _as_unknown(unknown, response)  # the lab is not replaced

    # The anonymous client's session is untouched: active, untouched by the heartbeat, still holding its lab.
    session = Session.objects.get(pk=anonymous_lab)
    assert (session.status, session.last_seen_at) == ("active", seen_before)
    body = lab_call(anon, "get", "/lab", anonymous_lab).json()
    assert (body["status"], body["ref_count"]) == ("running", 1)
    assert body["topology_sha256"] == hashlib.sha256(TOPOLOGY).hexdigest()


def test_the_anonymous_client_keeps_using_its_session_by_its_id(anon, anonymous_lab):
    assert status_of(anon, anonymous_lab).json()["status"] == "active"
    assert lab_call(anon, "get", "/lab/devices", anonymous_lab).status_code == 200
    assert lab_call(anon, "post", "/lab/release", anonymous_lab).status_code == 204
    assert anon.delete(f"{BASE}/session/{anonymous_lab}").status_code == 204


def test_admins_and_operators_still_see_and_end_anonymous_sessions(anon, anonymous_lab, admin_client, operator_client):
    assert status_of(admin_client, anonymous_lab).json()["status"] == "active"
    assert lab_call(operator_client, "get", "/lab/devices", anonymous_lab).status_code == 200
    assert operator_client.get(f"{BASE}/active-session").json()["session_id"] == anonymous_lab

    assert admin_client.delete(f"{BASE}/session/{anonymous_lab}").status_code == 204
    assert Session.objects.get(pk=anonymous_lab).status == "ended"


@pytest.mark.parametrize("active", ["owned", "anonymous_lab"])  # the instructor's session, or an anonymous one
@pytest.mark.parametrize("caller", ["anon", "instructor_client", "other_instructor_client", "narrowed_admin_client"])
def test_active_session_is_404_to_all_but_admins_and_operators_as_when_none_is_active(request, active, caller):
    request.getfixturevalue(active)
    client = request.getfixturevalue(caller)

    response = client.get(f"{BASE}/active-session")

    body = assert_problem(response, 404, "No active session")
    none = client.get(f"{BASE}/active-session?pool=a-pool-without-sessions").json()
    assert {k: body[k] for k in ("type", "title", "status", "detail")} == {
        k: none[k] for k in ("type", "title", "status", "detail")}


@pytest.mark.parametrize("active", ["owned", "anonymous_lab"])
@pytest.mark.parametrize("caller", ["admin_client", "operator_client"])
def test_active_session_shows_admins_and_operators_any_principals_session(request, active, caller):
    session_id = request.getfixturevalue(active)

    assert request.getfixturevalue(caller).get(f"{BASE}/active-session").json()["session_id"] == session_id


@pytest.fixture
def instructor_browser(instructor_user):
    """An instructor signed in with the session cookie (reading it marks the session accessed)."""
    client = APIClient()
    client.force_login(instructor_user)
    return client


@pytest.fixture
def foreign_anon():
    return APIClient(REMOTE_ADDR=FOREIGN_IP)


@pytest.fixture
def bad_key_client():
    client = APIClient()
    client.credentials(HTTP_X_API_KEY="lm_not-a-real-key")
    return client


HEALTH, NO_VIEW = "/debug/health", "/debug/hxalth"  # a path with no view, of the same length


def _headers(response) -> dict:
    """The answer's headers as a client sees them, less those that differ on every request."""
    return {k: v for k, v in response.headers.items() if k not in ("Date", "X-Trace-Id")}


@pytest.mark.parametrize("caller", ["anon", "foreign_anon", "bad_key_client", "instructor_client",
                                    "narrowed_admin_client", "instructor_browser"])
@pytest.mark.parametrize("method", ["get", "head", "options", "post"])
def test_debug_health_is_to_all_but_admins_and_operators_exactly_a_path_with_no_view(request, anonymous_lab, caller,
                                                                                     method):
    client = request.getfixturevalue(caller)

    response, unknown = (getattr(client, method)(f"{BASE}{path}") for path in (HEALTH, NO_VIEW))

    assert response.status_code == unknown.status_code == 404
    assert _headers(response) == _headers(unknown)  # no Allow, Vary, X-RateLimit-*; the same length
    assert list(response.headers) == list(unknown.headers)  # in the same order
    if method != "head":
        strip = lambda body: {k: v for k, v in body.items() if k not in ("trace_id", "instance", "detail")}  # noqa: E731
        assert strip(response.json()) == strip(unknown.json())
        assert response.json()["detail"] == unknown.json()["detail"].replace(NO_VIEW, HEALTH)
        assert response.content.replace(HEALTH.encode(), b"").replace(response["X-Trace-Id"].encode(), b"") == \
            unknown.content.replace(NO_VIEW.encode(), b"").replace(unknown["X-Trace-Id"].encode(), b"")


@pytest.mark.parametrize("caller", ["admin_client", "operator_client"])
def test_debug_health_answers_admins_and_operators(request, anonymous_lab, caller):
    body = request.getfixturevalue(caller).get(f"{BASE}/debug/health").json()

    assert (body["sessions"], body["queue_length"]) == (1, 0)


# --- rate limit ----------------------------------------------------------------------------------------

def test_the_rate_limit_answers_429_with_retry_after(anon, worker, settings):
    settings.SESSION_API_RATE_LIMIT = "3/min"
    session_id = create(anon)["session_id"]
    assert status_of(anon, session_id).status_code == 200
    assert anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=session_id).status_code == 204

    response = status_of(anon, session_id)

    assert_problem(response, 429)
    assert 1 <= int(response["Retry-After"]) <= 61
    assert APIClient().get(f"{BASE}/healthz").status_code == 204  # the probe is never limited


def test_the_rate_limit_is_counted_per_principal(worker, settings, instructor_client, other_instructor_client):
    settings.SESSION_API_RATE_LIMIT = "2/min"
    for _ in range(2):
        create(instructor_client)

    assert_problem(instructor_client.post(f"{BASE}/session"), 429)
    assert other_instructor_client.post(f"{BASE}/session").status_code == 201
    assert APIClient().post(f"{BASE}/session").status_code == 201  # anonymous: counted by address


def test_the_remote_lab_limit_is_apart_from_the_api_limit(anon, worker, settings):
    settings.API_RATE_LIMIT = "1/min"
    settings.SESSION_API_RATE_LIMIT = ""  # blank: no limit on this API

    session_id = create(anon)["session_id"]

    assert all(status_of(anon, session_id).status_code == 200 for _ in range(5))


# --- a deleted user's sessions end, and never become anonymous (issue 19) --------------------------------

def test_deleting_a_user_ends_their_sessions_and_anonymous_callers_never_reach_them(
        admin_user, instructor_user, instructor_client, anon, worker, cml, teardowns_run_inline):
    from django.test import Client

    from apps.audit.models import AuditEvent
    from apps.sessions.models import SessionLab

    active = create(instructor_client)["session_id"]
    assert acquire(instructor_client, active).status_code == 200
    waiting = create(instructor_client)["session_id"]
    queued = create(anon)["session_id"]  # an anonymous client waits behind them
    admin_browser = Client()
    admin_browser.force_login(admin_user)

    with teardowns_run_inline(execute=True):
        response = admin_browser.post(f"/admin/auth/user/{instructor_user.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302, response.content.decode()[:2000]
    for session_id in (active, waiting):
        session = Session.objects.get(pk=session_id)
        assert (session.status, session.owner_id, session.owner_key) == ("ended", None, f"user:{instructor_user.pk}")
        event = AuditEvent.objects.get(resource_id=session_id, event_type="session.ended")
        assert "instructor1 was deleted" in event.metadata["reason"]
        assert_problem(status_of(anon, session_id), 404, "Session not found")
        assert_problem(anon.delete(f"{BASE}/session/{session_id}"), 404, "Session not found")
        assert_problem(lab_call(anon, "get", "/lab/devices", session_id), 404, "Session not found")
    assert SessionLab.objects.get(worker=worker).status == "empty" and not cml.summary()["labs"]  # no one's to reuse
    assert status_of(anon, queued).json()["status"] == "active"  # the worker went to the next in the queue


def test_a_deleted_users_session_is_no_anonymous_session(instructor_user, instructor_client, anon, worker):
    """Even a session left live (deleted outside the signal's reach: a raw SQL cleanup) stays its user's."""
    session_id = create(instructor_client)["session_id"]
    Session.objects.filter(pk=session_id).update(owner=None)  # what SET_NULL leaves

    assert_problem(status_of(anon, session_id), 404, "Session not found")
    assert_problem(anon.post(f"{BASE}/session/heartbeat", HTTP_X_SESSION_ID=session_id), 404, "Session not found")
    assert_problem(anon.delete(f"{BASE}/session/{session_id}"), 404, "Session not found")
    assert Session.objects.get(pk=session_id).status == "active"
