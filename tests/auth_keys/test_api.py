"""/api/auth/api-keys: a user's own keys, created (shown once), listed, revoked one by one or all at once;
a key's role is at most its maker's and narrows what requests made with it may do; expiry; the journal."""

import hashlib
import json
import logging
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.api.models import ApiKey
from apps.identity.services import api_key_create
from tests.factories import instance_in

pytestmark = pytest.mark.django_db

KEYS = "/api/auth/api-keys"


def with_key(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


def create(client, **body):
    response = client.post(KEYS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    return response.json()


# --- create and list ---------------------------------------------------------------------------------

def test_a_new_key_is_answered_once_and_never_listed(operator_client):
    body = create(operator_client, name="ci")

    raw = body["key"]
    assert raw.startswith("lm_")
    assert body["sha256"] == hashlib.sha256(raw.encode()).hexdigest()
    assert body["prefix"] == raw[:10]
    assert (body["name"], body["role"], body["status"], body["expires_at"]) == ("ci", "operator", "active", None)
    listing = operator_client.get(KEYS)
    assert listing.status_code == 200
    assert raw not in listing.content.decode()
    rows = {row["sha256"]: row for row in listing.json()["api_keys"]}
    assert set(rows[body["sha256"]]) == {"sha256", "prefix", "name", "role", "status", "created_at", "last_used_at",
                                         "expires_at", "revoked_at"}


def test_the_creation_answer_is_not_cached(operator_client):
    response = operator_client.post(KEYS, {}, format="json")

    assert response["Cache-Control"] == "no-store"


def test_the_new_key_works_at_once(operator_client):
    raw = create(operator_client)["key"]

    assert with_key(raw).post("/api/workers", {"name": "made-with-new-key"}, format="json").status_code == 201


def test_a_user_lists_only_their_own_keys(operator_client, instructor_client, instructor_user):
    mine = create(operator_client, name="mine")["sha256"]
    theirs = api_key_create(user=instructor_user, actor="tests", name="theirs")[0].key_hash

    listed = {row["sha256"] for row in operator_client.get(KEYS).json()["api_keys"]}

    assert mine in listed
    assert theirs not in listed


def test_the_default_role_is_the_callers_highest(admin_client, instructor_client):
    assert create(admin_client)["role"] == "admin"
    assert create(instructor_client)["role"] == "instructor"


# --- roles -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("client_name, role, status", [
    ("instructor_client", "admin", 403),
    ("instructor_client", "operator", 403),
    ("operator_client", "instructor", 403),
    ("operator_client", "admin", 403),
    ("operator_client", "superhero", 422),
    ("admin_client", "operator", 201),
    ("admin_client", "instructor", 201),
])
def test_a_keys_role_is_at_most_the_callers(request, client_name, role, status):
    client = request.getfixturevalue(client_name)
    keys_before = ApiKey.objects.count()

    response = client.post(KEYS, {"role": role}, format="json")

    assert response.status_code == status, response.content
    if status >= 400:
        assert_problem(response, status)
        assert ApiKey.objects.count() == keys_before
    else:
        assert response.json()["role"] == role


def test_an_admins_instructor_key_cannot_do_admin_things(admin_client, admin_user, instructor_user):
    raw = create(admin_client, role="instructor")["key"]
    narrowed = with_key(raw)
    someone_elses = instance_in("pending", created_by=instructor_user)

    assert_problem(narrowed.post("/api/workers", {"name": "nope"}, format="json"), 403)
    assert_problem(narrowed.get("/api/webhooks"), 403)
    assert_problem(narrowed.get("/api/audit/events"), 403)
    assert_problem(narrowed.get(f"/api/lablet-instances/{someone_elses.public_id}"), 404)
    assert narrowed.get("/api/lablet-instances").json()["lablet_instances"] == []
    assert_problem(narrowed.post(KEYS, {"role": "admin"}, format="json"), 403)  # nor mint a bigger key
    assert narrowed.get("/api/auth/me").json()["roles"] == ["instructor"]
    # What an instructor may do, it does.
    assert narrowed.get("/api/workers").status_code == 200


def test_a_key_loses_its_role_when_its_user_does(operator_client, operator_user):
    raw = create(operator_client, role="operator")["key"]
    key = with_key(raw)
    assert key.get("/api/worker-templates").status_code == 200

    operator_user.groups.remove(Group.objects.get(name="operator"))

    assert_problem(key.get("/api/worker-templates"), 403)


# --- expiry ------------------------------------------------------------------------------------------

def test_expires_in_days_sets_the_expiry(operator_client):
    before = timezone.now()

    body = create(operator_client, expires_in_days=30)

    expires_at = ApiKey.objects.get(key_hash=body["sha256"]).expires_at
    assert before + timedelta(days=30) <= expires_at <= timezone.now() + timedelta(days=30)
    assert body["expires_at"] is not None


@pytest.mark.parametrize("body", [
    {"expires_at": "2001-01-01T00:00:00Z"},
    {"expires_in_days": 0},
    {"expires_in_days": 30, "expires_at": "2999-01-01T00:00:00Z"},
])
def test_a_bad_expiry_is_refused(operator_client, body):
    problem = assert_problem(operator_client.post(KEYS, body, format="json"), 422)

    assert problem["errors"]


def test_an_expired_key_gets_401_and_is_listed_as_expired(operator_client):
    body = create(operator_client, expires_in_days=1)
    key = with_key(body["key"])
    assert key.get("/api/workers").status_code == 200

    ApiKey.objects.filter(key_hash=body["sha256"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    problem = assert_problem(key.get("/api/workers"), 401)
    assert "expired" in problem["detail"]
    rows = {row["sha256"]: row for row in operator_client.get(KEYS).json()["api_keys"]}
    assert rows[body["sha256"]]["status"] == "expired"


# --- revoke and purge --------------------------------------------------------------------------------

def test_a_key_can_revoke_itself(operator_client):
    body = create(operator_client)
    key = with_key(body["key"])

    response = key.post(f"{KEYS}/revoke/{body['sha256']}")

    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    problem = assert_problem(key.get("/api/workers"), 401)
    assert "revoked" in problem["detail"]
    assert operator_client.get("/api/workers").status_code == 200  # the other key still works


def test_revoking_someone_elses_key_is_404_and_leaves_it_alone(admin_client, operator_user):
    api_key, raw = api_key_create(user=operator_user, actor="tests")

    assert_problem(admin_client.post(f"{KEYS}/revoke/{api_key.key_hash}"), 404)
    assert_problem(admin_client.post(f"{KEYS}/revoke/{'0' * 64}"), 404)
    assert with_key(raw).get("/api/workers").status_code == 200
    assert not AuditEvent.objects.filter(event_type="api_key.revoked").exists()


def test_revoking_twice_changes_nothing_more(operator_client):
    sha256 = create(operator_client)["sha256"]

    first = operator_client.post(f"{KEYS}/revoke/{sha256}").json()
    second = operator_client.post(f"{KEYS}/revoke/{sha256}").json()

    assert first["revoked_at"] == second["revoked_at"]
    assert AuditEvent.objects.filter(event_type="api_key.revoked").count() == 1


def test_purge_revokes_every_key_of_the_caller_and_only_theirs(operator_client, operator_user, instructor_client):
    others = [with_key(create(operator_client)["key"]) for _ in range(2)]

    response = operator_client.post(f"{KEYS}/purge")

    assert response.status_code == 200
    assert response.json() == {"revoked": 3}  # the fixture's key, which made this request, and the two
    for client in (operator_client, *others):
        assert_problem(client.get("/api/workers"), 401)
    assert instructor_client.get("/api/workers").status_code == 200
    assert not ApiKey.objects.filter(user=operator_user, revoked_at__isnull=True).exists()


# --- last use, the journal, the logs -------------------------------------------------------------------

def test_last_used_at_is_stamped_at_most_once_a_minute(operator_client, operator_user):
    body = create(operator_client)
    key = with_key(body["key"])
    row = ApiKey.objects.filter(key_hash=body["sha256"])
    assert row.get().last_used_at is None

    key.get("/api/workers")
    first = row.get().last_used_at
    key.get("/api/workers")
    assert first is not None and row.get().last_used_at == first

    row.update(last_used_at=first - timedelta(minutes=2))
    key.get("/api/workers")
    assert row.get().last_used_at > first


def test_every_change_is_journalled_without_the_key(operator_client, caplog):
    caplog.set_level(logging.DEBUG)
    body = create(operator_client, name="journalled", role="operator")
    with_key(body["key"]).post(f"{KEYS}/revoke/{body['sha256']}")
    create(operator_client)
    operator_client.post(f"{KEYS}/purge")

    events = list(AuditEvent.objects.filter(resource_type="api_key").order_by("pk"))
    assert [e.event_type for e in events][-5:] == [
        "api_key.created", "api_key.revoked", "api_key.created", "api_key.revoked", "api_key.revoked"]
    created = next(e for e in events if e.metadata.get("name") == "journalled")
    assert created.metadata["role"] == "operator"
    assert created.metadata["sha256"] == body["sha256"]
    revoked_by_itself = next(e for e in events if e.event_type == "api_key.revoked")
    assert body["prefix"] in revoked_by_itself.actor
    journal = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert body["key"] not in journal
    assert body["key"] not in caplog.text


def test_create_api_key_command_gives_the_key_its_role_and_expiry(capsys):
    call_command("create_api_key", "--user", "ci-bot", "--role", "instructor", "--expires-in-days", "7")

    raw = capsys.readouterr().out.strip()
    api_key = ApiKey.objects.get(key_hash=hashlib.sha256(raw.encode()).hexdigest())
    assert api_key.role == "instructor"
    assert timezone.now() + timedelta(days=6) < api_key.expires_at <= timezone.now() + timedelta(days=7)
    assert with_key(raw).get("/api/lablet-definitions").status_code == 200


def test_credentials_in_a_query_string_never_reach_the_request_log(operator_client, caplog):
    raw = create(operator_client)["key"]

    with caplog.at_level(logging.INFO, logger="labmanager.request"):
        operator_client.get(f"/api/workers?api_key={raw}&status=running")
        APIClient().get("/api/auth/callback?code=secret-code&state=secret-state")

    lines = [r.getMessage() for r in caplog.records if r.name == "labmanager.request"]
    assert any("/api/workers?api_key=[redacted]&status=running" in line for line in lines)
    assert raw not in caplog.text
    assert "secret-code" not in caplog.text and "secret-state" not in caplog.text
