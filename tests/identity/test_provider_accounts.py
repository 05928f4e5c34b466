"""Provider users are accounts linked to (issuer, subject) (issue 19, item 8): a provider's username never
picks an account, a subject renamed at the provider stays the same account, and access ends when the provider
says so: at the scheduled provider sync (Keycloak's admin API, served by the test issuer of conftest.py) for
API keys and sessions, and at the periodic re-check of browser sessions (a refresh-token grant at the real
OpenID provider, oidc-provider-mock, through the live server)."""

import importlib
from datetime import timedelta

import httpx
import pytest
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.identity.models import ProviderIdentity
from apps.identity.recheck import CHECKED_AT_KEY, OIDC_BACKEND, REFRESH_TOKEN_KEY
from apps.identity.services import api_key_create, user_ensure_with_role
from tests.identity.conftest import ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET
from tests.identity.test_browser_login import OPERATOR_CLAIMS, group_names, log_in

User = get_user_model()


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def journal(event_type: str, username: str) -> list[dict]:
    """In the order written: inside a test's transaction the rows are not sealed (no sequence_num), and
    PostgreSQL sorts NULLs last where SQLite sorts them first."""
    return list(AuditEvent.objects.filter(event_type=event_type, resource_id=username).order_by("pk")
                .values_list("metadata", flat=True))


# --- accounts are found by (issuer, subject) ------------------------------------------------------------------

@pytest.mark.django_db
def test_a_token_named_like_a_local_superuser_gets_an_account_of_its_own(issuer):
    local = User.objects.create_superuser("admin", "root@example.test", "local-break-glass-pass")

    response = bearer(issuer.token(preferred_username="admin", realm_access={"roles": ["instructor"]})).get("/api/auth/me")

    assert response.status_code == 200, response.content
    assert response.json()["username"] == "admin@127.0.0.1" and response.json()["roles"] == ["instructor"]
    local.refresh_from_db()
    assert local.is_superuser and local.is_staff and local.check_password("local-break-glass-pass")
    assert not hasattr(local, "provider_identity") or local.provider_identity is None
    created = journal("user.created", "admin@127.0.0.1")
    assert created[0]["username_taken"] == "admin" and created[0]["subject"] == issuer.subject("admin")


@pytest.mark.django_db(transaction=True)
def test_a_provider_user_named_like_a_local_superuser_does_not_sign_in_as_them(oidc_settings, oidc_provider, live_server):
    local = User.objects.create_superuser("root", "root@example.test", "local-break-glass-pass")
    oidc_provider.put_user("mallory-sub", {"preferred_username": "root", "email": "mallory@example.test",
                                           "realm_access": {"roles": ["instructor"]}})

    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        me = log_in(browser, live_server, "mallory-sub", next_url="/api/auth/me").json()

    assert me["username"] != "root" and me["username"].startswith("root@") and me["roles"] == ["instructor"]
    local.refresh_from_db()
    assert local.is_superuser and local.check_password("local-break-glass-pass")
    assert group_names("root") == set() and User.objects.get(username=me["username"]).provider_identity.subject == "mallory-sub"


@pytest.mark.django_db
def test_the_same_subject_renamed_at_the_provider_is_still_the_same_account(issuer):
    subject = issuer.subject("olga")
    first = bearer(issuer.token(sub=subject, preferred_username="olga")).get("/api/auth/me").json()

    renamed = bearer(issuer.token(sub=subject, preferred_username="olga.ops", email="o@new.example")).get("/api/auth/me")
    someone_else = bearer(issuer.token(sub="another-subject", preferred_username="olga")).get("/api/auth/me")

    assert first["username"] == renamed.json()["username"] == "olga"  # the account keeps its first name
    link = ProviderIdentity.objects.get(subject=subject)
    assert (link.user.username, link.preferred_username, link.user.email) == ("olga", "olga.ops", "o@new.example")
    assert someone_else.json()["username"] == "olga@127.0.0.1"
    assert User.objects.filter(provider_identity__issuer=issuer.url).count() == 2


@pytest.mark.django_db
def test_an_account_the_provider_made_before_linking_is_linked_at_its_first_sign_in(issuer):
    migration = importlib.import_module("apps.identity.migrations.0003_link_existing_provider_users")
    made_by_provider = User.objects.create(username="legacy")
    made_by_provider.set_unusable_password()
    made_by_provider.save()
    audit_record(event_type="user.created", actor="system", resource_type="user", resource_id="legacy",
                 action="user.create", metadata={"via": "oidc-login", "roles": ["operator"]})
    user_ensure_with_role(username="localop", role="operator", actor="tests")  # local: journalled without `via`
    audit_record(event_type="user.created", actor="system", resource_type="user", resource_id="localop",
                 action="user.create", metadata={"role": "operator"})

    migration.forward(django_apps, None)
    first = bearer(issuer.token(preferred_username="legacy")).get("/api/auth/me").json()
    second = bearer(issuer.token(sub="other-sub", preferred_username="legacy")).get("/api/auth/me").json()
    local = bearer(issuer.token(preferred_username="localop")).get("/api/auth/me").json()

    assert first["username"] == "legacy" and ProviderIdentity.objects.get(user__username="legacy").subject == issuer.subject("legacy")
    assert second["username"] == "legacy@127.0.0.1"  # linked once, to the first subject
    assert local["username"] == "localop@127.0.0.1" and group_names("localop") == {"operator"}


# --- the scheduled provider sync (Keycloak's admin API) -----------------------------------------------------------

@pytest.fixture
def sync_settings(issuer, settings):
    settings.OIDC_ADMIN_CLIENT_ID, settings.OIDC_ADMIN_CLIENT_SECRET = ADMIN_CLIENT_ID, ADMIN_CLIENT_SECRET
    settings.OIDC_OP_TOKEN_ENDPOINT = ""
    return settings


def run_provider_sync():
    """The scheduled function itself, by the dotted name the schedule names."""
    return import_string(django_settings.Q_SCHEDULES["identity_provider_sync"]["func"])()


def provider_user_with_key_and_session(issuer, username="olga", roles=("operator",)):
    """A provider user as they sign in: a bearer token, an API key made with it, a browser session."""
    issuer.users[issuer.subject(username)] = {"username": username, "realm_roles": list(roles)}
    token = issuer.token(preferred_username=username, realm_access={"roles": list(roles)})
    created = bearer(token).post("/api/auth/api-keys", {"name": "ci"}, format="json")
    assert created.status_code == 201, created.content
    browser = Client()
    browser.force_login(User.objects.get(username=username), backend=OIDC_BACKEND)
    session = browser.session
    session[CHECKED_AT_KEY], session[REFRESH_TOKEN_KEY] = timezone.now().timestamp(), "not-due-for-a-recheck"
    session.save()
    return created.json()["key"], browser


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["gone", "disabled", "no-role"])
def test_a_user_removed_at_the_provider_loses_keys_and_sessions_at_the_sync(issuer, sync_settings, change):
    key, browser = provider_user_with_key_and_session(issuer)
    assert APIClient(HTTP_X_API_KEY=key).get("/api/workers").status_code == 200
    assert browser.get("/api/auth/me").status_code == 200
    subject = issuer.subject("olga")
    if change == "gone":
        del issuer.users[subject]
    elif change == "disabled":
        issuer.users[subject]["enabled"] = False
    else:
        issuer.users[subject]["realm_roles"] = ["offline_access"]

    counts = run_provider_sync()

    assert counts["deprovisioned"] == 1
    refused = APIClient(HTTP_X_API_KEY=key).get("/api/workers")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert browser.get("/api/auth/me").status_code == 401
    assert group_names("olga") == set() and not User.objects.get(username="olga").is_staff
    deprovisioned = journal("user.deprovisioned", "olga")
    assert len(deprovisioned) == 1 and deprovisioned[0]["via"] == "provider-sync" and deprovisioned[0]["reason"] == change
    assert journal("user.roles_synced", "olga")[-1] == {"via": "provider-sync", "added": [], "removed": ["operator"]}
    assert AuditEvent.objects.filter(event_type="api_key.revoked", actor="provider-sync").count() == 1
    assert run_provider_sync()["deprovisioned"] == 0 and len(journal("user.deprovisioned", "olga")) == 1  # idempotent


@pytest.mark.django_db
def test_roles_changed_at_the_provider_are_synced_without_a_sign_in(issuer, sync_settings):
    key, browser = provider_user_with_key_and_session(issuer, roles=("operator", "instructor"))
    issuer.users[issuer.subject("olga")]["realm_roles"] = ["instructor"]

    counts = run_provider_sync()

    assert counts == {"checked": 1, "synced": 1, "deprovisioned": 0, "errors": 0}
    assert group_names("olga") == {"instructor"}
    assert journal("user.roles_synced", "olga")[-1] == {"via": "provider-sync", "added": [], "removed": ["operator"]}
    assert browser.get("/api/auth/me").json()["roles"] == ["instructor"]  # the session lives, with the new roles
    assert APIClient(HTTP_X_API_KEY=key).get("/api/audit/events").status_code == 403  # the operator key lost it


@pytest.mark.django_db
def test_the_sync_is_off_without_admin_credentials_and_leaves_users_alone_when_the_api_fails(issuer, settings):
    key, _ = provider_user_with_key_and_session(issuer)
    del issuer.users[issuer.subject("olga")]

    assert run_provider_sync() is None and issuer.admin_requests == []
    settings.OIDC_ADMIN_CLIENT_ID, settings.OIDC_ADMIN_CLIENT_SECRET = ADMIN_CLIENT_ID, "wrong-secret"
    settings.OIDC_OP_TOKEN_ENDPOINT = ""
    assert "error" in run_provider_sync()

    assert APIClient(HTTP_X_API_KEY=key).get("/api/workers").status_code == 200


# --- accounts of migration 0003 (no subject recorded) ---------------------------------------------------------

def pending_account(username="legacy", roles=("operator",)):
    """An account the provider made before links existed, as migration 0003 finds it, with a role and an API key."""
    migration = importlib.import_module("apps.identity.migrations.0003_link_existing_provider_users")
    user = User.objects.create(username=username)
    user.set_unusable_password()
    user.save()
    for role in roles:
        user_ensure_with_role(username=username, role=role, actor="tests")
    audit_record(event_type="user.created", actor="system", resource_type="user", resource_id=username,
                 action="user.create", metadata={"via": "oidc-login", "roles": list(roles)})
    migration.forward(django_apps, None)
    _, key = api_key_create(user=user, actor="tests")
    assert ProviderIdentity.objects.get(user=user).subject is None
    return user, key


@pytest.mark.django_db
def test_the_sync_links_a_pending_account_to_the_provider_user_of_its_exact_name_and_syncs_its_roles(issuer, sync_settings):
    user, key = pending_account()
    subject = issuer.subject("legacy")
    issuer.users[subject] = {"username": "legacy", "realm_roles": ["instructor"]}
    issuer.users["someone-else"] = {"username": "legacy2", "realm_roles": ["admin"]}

    counts = run_provider_sync()

    assert counts["synced"] == 1 and counts["deprovisioned"] == 0
    link = ProviderIdentity.objects.get(user=user)
    assert (link.issuer, link.subject) == (issuer.url, subject)
    assert group_names("legacy") == {"instructor"}
    assert journal("user.linked", "legacy")[-1] == {"via": "provider-sync", "issuer": issuer.url, "subject": subject}
    assert APIClient(HTTP_X_API_KEY=key).get("/api/auth/me").status_code == 200  # the key lives (not revoked)


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["gone", "name-reused"])
def test_the_sync_deprovisions_a_pending_account_whose_user_is_gone_or_whose_name_is_someone_elses_now(
        issuer, sync_settings, change):
    user, key = pending_account()
    if change == "name-reused":  # the old user was deleted; a new Keycloak user, created since, took the name
        issuer.users["newcomer-sub"] = {"username": "legacy", "realm_roles": ["operator"],
                                        "created": int((user.date_joined.timestamp() + 3600) * 1000)}

    counts = run_provider_sync()
    newcomer = bearer(issuer.token(sub="newcomer-sub", preferred_username="legacy")).get("/api/auth/me").json()

    assert counts["deprovisioned"] == 1
    refused = APIClient(HTTP_X_API_KEY=key).get("/api/workers")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert group_names("legacy") == set()
    assert journal("user.deprovisioned", "legacy")[-1]["reason"] == change
    assert ProviderIdentity.objects.get(user=user).subject is None  # never linked
    assert newcomer["username"] == "legacy@127.0.0.1"  # the new user gets an account of its own
    run_provider_sync()
    assert len(journal("user.deprovisioned", "legacy")) == 1  # done once: the account is no longer pending


@pytest.mark.django_db
def test_a_sign_in_links_a_pending_account_only_within_oidc_pending_link_days(issuer, settings):
    settings.OIDC_PENDING_LINK_DAYS = 30
    old, _ = pending_account("old-legacy")
    ProviderIdentity.objects.filter(user=old).update(created_at=timezone.now() - timedelta(days=31))
    recent, _ = pending_account("new-legacy")
    ProviderIdentity.objects.filter(user=recent).update(created_at=timezone.now() - timedelta(days=29))

    late = bearer(issuer.token(preferred_username="old-legacy")).get("/api/auth/me").json()
    in_time = bearer(issuer.token(preferred_username="new-legacy")).get("/api/auth/me").json()

    assert late["username"] == "old-legacy@127.0.0.1" and ProviderIdentity.objects.get(user=old).subject is None
    assert in_time["username"] == "new-legacy"
    assert ProviderIdentity.objects.get(user=recent).subject == issuer.subject("new-legacy")


# --- the periodic re-check of browser sessions -------------------------------------------------------------------

def backdate_the_last_check(browser, seconds: float) -> None:
    """The session's last check, `seconds` earlier: what the passing of that much time does (no sleeping)."""
    session = SessionStore(session_key=browser.cookies["sessionid"])
    session[CHECKED_AT_KEY] -= seconds
    session.save()


@pytest.mark.django_db(transaction=True)
def test_a_role_removed_at_the_provider_goes_at_the_next_recheck_without_signing_in_again(
        oidc_settings, oidc_provider, live_server):
    oidc_settings.OIDC_ROLE_RECHECK_SECONDS = 900
    oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": ["operator", "instructor"]}})
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        assert log_in(browser, live_server, "olga-sub", next_url="/api/auth/me").json()["roles"] == ["instructor", "operator"]
        oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": ["instructor"]}})

        within_the_bound = browser.get(f"{live_server.url}/api/auth/me").json()["roles"]
        backdate_the_last_check(browser, 901)
        after_the_bound = browser.get(f"{live_server.url}/api/auth/me")

    assert within_the_bound == ["instructor", "operator"]  # no provider call per request
    assert after_the_bound.status_code == 200 and after_the_bound.json()["roles"] == ["instructor"]
    assert group_names("olga") == {"instructor"}
    assert journal("user.roles_synced", "olga")[-1] == {"via": "session-recheck", "added": [], "removed": ["operator"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["sessions revoked at the provider", "no role left"])
def test_a_session_ends_at_the_recheck_when_the_provider_no_longer_grants_it(
        oidc_settings, oidc_provider, live_server, change):
    oidc_provider.put_user("olga-sub", OPERATOR_CLAIMS)
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        log_in(browser, live_server, "olga-sub")
        if change == "no role left":
            oidc_provider.put_user("olga-sub", {**OPERATOR_CLAIMS, "realm_access": {"roles": []}})
        else:  # what deleting or disabling the user does to their refresh tokens in Keycloak
            assert httpx.post(f"{oidc_provider.url}/users/olga-sub/revoke-tokens", timeout=5).status_code == 204
        backdate_the_last_check(browser, oidc_settings.OIDC_ROLE_RECHECK_SECONDS)

        response = browser.get(f"{live_server.url}/api/auth/me")
        again = browser.get(f"{live_server.url}/api/auth/me")

    assert response.status_code == again.status_code == 401
