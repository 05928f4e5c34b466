"""A database made before issue 18 moved the `labmanager` app's models (ApiKey, IdempotencyRecord) into
`apps.api`, and `labmanager.identity` into `apps.identity`, migrates forward with nothing lost.

The tables kept their names (`db_table`), so such a database differs from today's only in its bookkeeping:
django_migrations lists `labmanager.0001_initial` and `labmanager.0002_apikey_role_expiry` instead of the
`api` ones, the models' content types (the permissions granted on them, the admin's log entries) say
`labmanager`, and the browser sessions of users signed in through OIDC name the backend by its old path.
The tests put that bookkeeping back on a populated database, run `migrate`, and check that the `api`
migrations count as applied (no table is created again), that grants and log entries follow, that the API
key still authenticates and that an OIDC session still signs its user in.
"""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import SESSION_KEY, get_user
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test import RequestFactory

from apps.api.models import ApiKey, IdempotencyRecord
from apps.identity.services import api_key_create, user_ensure_with_role

pytestmark = pytest.mark.django_db(transaction=True)
MOVED = {"0001_initial", "0002_apikey_role_expiry"}
MODELS = {"apikey", "idempotencyrecord"}
OLD_BACKEND, NEW_BACKEND = "labmanager.identity.oidc.OidcBackend", "apps.identity.oidc.OidcBackend"


def _as_before_the_move() -> None:
    """The bookkeeping of a database the old code made; the api migrations after the moved ones unapplied, and
    apps.identity's (whose later migrations make tables: undone first)."""
    call_command("migrate", "identity", "0001_sessions_backend_path", verbosity=0)
    recorded = MigrationRecorder.Migration.objects
    recorded.filter(app__in=["api", "identity"]).delete()
    for name in sorted(MOVED):
        recorded.create(app="labmanager", name=name)
    ContentType.objects.filter(app_label="api").update(app_label="labmanager")
    ContentType.objects.clear_cache()


def _populated():
    """An operator (no superuser: permissions count) granted to view API keys, a key, an idempotency record,
    an admin log entry on the key, and a browser session signed in through OIDC."""
    user, _ = user_ensure_with_role(username="keeper", role="operator")
    api_key, raw = api_key_create(user=user, actor="test", name="before the move")
    IdempotencyRecord.objects.create(user=user, key="k-1", method="POST", path="/api/x", fingerprint="f" * 64)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="api", codename="view_apikey"))
    LogEntry.objects.create(user=user, content_type=ContentType.objects.get_for_model(ApiKey),
                            object_id=str(api_key.pk), object_repr=str(api_key), action_flag=CHANGE)
    session = SessionStore()
    session.update({SESSION_KEY: str(user.pk), "_auth_user_backend": OLD_BACKEND,
                    "_auth_user_hash": user.get_session_auth_hash()})
    session.create()
    return user, raw, session.session_key


def _signed_in_user(session_key):
    request = RequestFactory().get("/")
    request.session = SessionStore(session_key)
    return get_user(request)


def _check_moved(user, raw, session_key, client) -> None:
    applied = set(MigrationRecorder.Migration.objects.filter(app="api").values_list("name", flat=True))
    assert MOVED | {"0003_content_types_from_labmanager"} <= applied
    executor = MigrationExecutor(connection)
    assert not executor.migration_plan(executor.loader.graph.leaf_nodes())
    assert set(ContentType.objects.filter(app_label="api").values_list("model", flat=True)) == MODELS
    assert not ContentType.objects.filter(app_label="labmanager").exists()
    user = type(user).objects.get(pk=user.pk)  # a fresh permission cache
    assert not user.is_superuser and user.has_perm("api.view_apikey")
    entry = LogEntry.objects.get(user=user)
    assert entry.content_type.app_label == "api" and entry.get_edited_object().name == "before the move"
    assert ApiKey.objects.get(user=user).name == "before the move"
    assert IdempotencyRecord.objects.filter(key="k-1").exists()
    assert client.get("/api/auth/api-keys", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    assert SessionStore(session_key).load()["_auth_user_backend"] == NEW_BACKEND
    assert _signed_in_user(session_key).pk == user.pk


def test_a_database_of_the_labmanager_app_migrates_forward_with_nothing_lost(client):
    user, raw, session_key = _populated()
    try:
        _as_before_the_move()
        assert _signed_in_user(session_key).is_anonymous  # what the move alone would do to OIDC sessions
        plan = MigrationExecutor(connection).migration_plan([("api", "0003_content_types_from_labmanager"),
                                                             ("identity", "0001_sessions_backend_path")])
        assert [m.name for m, _ in plan] == ["0003_content_types_from_labmanager",  # 0001, 0002: replaced, applied
                                            "0001_sessions_backend_path"]

        call_command("migrate", verbosity=0)
    finally:
        ContentType.objects.clear_cache()

    _check_moved(user, raw, session_key, client)


def test_an_earlier_partial_migrate_does_not_strand_the_grants(client):
    """`migrate <one app>` with the new code first: post_migrate makes fresh `api` content types and
    permissions beside the old ones; the full migrate keeps the old ones, which carry the grants."""
    user, raw, session_key = _populated()
    try:
        _as_before_the_move()
        call_command("migrate", "lablets", verbosity=0)
        assert set(ContentType.objects.filter(app_label="api").values_list("model", flat=True)) == MODELS

        call_command("migrate", verbosity=0)
    finally:
        ContentType.objects.clear_cache()

    _check_moved(user, raw, session_key, client)
