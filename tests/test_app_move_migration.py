"""A database made before issue 18 moved the `labmanager` app's models (ApiKey, IdempotencyRecord) into
`apps.api` migrates forward with nothing lost.

The tables kept their names (`db_table`), so such a database differs from today's only in its bookkeeping:
django_migrations lists `labmanager.0001_initial` and `labmanager.0002_apikey_role_expiry` instead of the
`api` ones, and the models' content types (their permissions, the admin's log entries) say `labmanager`.
The test puts that bookkeeping back on a populated database, runs `migrate`, and checks that the `api`
migrations count as applied (no table is created again), that the content types and the permissions
granted on them moved, and that the API key still authenticates.
"""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from apps.api.models import ApiKey, IdempotencyRecord
from apps.identity.services import api_key_create, user_ensure_with_role

pytestmark = pytest.mark.django_db(transaction=True)
MOVED = {"0001_initial", "0002_apikey_role_expiry"}


def _as_before_the_move() -> None:
    recorded = MigrationRecorder.Migration.objects
    recorded.filter(app="api").delete()
    for name in sorted(MOVED):
        recorded.create(app="labmanager", name=name)
    ContentType.objects.filter(app_label="api").update(app_label="labmanager")
    ContentType.objects.clear_cache()


def test_a_database_of_the_labmanager_app_migrates_forward_with_nothing_lost(client):
    user, _ = user_ensure_with_role(username="keeper", role="admin")
    _, raw = api_key_create(user=user, actor="test", name="before the move")
    IdempotencyRecord.objects.create(user=user, key="k-1", method="POST", path="/api/x", fingerprint="f" * 64)
    user.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    try:
        _as_before_the_move()
        assert set(ContentType.objects.filter(app_label="labmanager").values_list("model", flat=True)) == {
            "apikey", "idempotencyrecord"}
        plan = MigrationExecutor(connection).migration_plan([("api", "0003_content_types_from_labmanager")])
        assert [m.name for m, _ in plan] == ["0003_content_types_from_labmanager"]  # 0001, 0002: replaced, applied

        call_command("migrate", verbosity=0)
    finally:
        ContentType.objects.clear_cache()

    applied = set(MigrationRecorder.Migration.objects.filter(app="api").values_list("name", flat=True))
    assert MOVED | {"0003_content_types_from_labmanager"} <= applied
    assert not MigrationExecutor(connection).migration_plan(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert set(ContentType.objects.filter(app_label="api").values_list("model", flat=True)) == {
        "apikey", "idempotencyrecord"}
    assert not ContentType.objects.filter(app_label="labmanager").exists()
    user.refresh_from_db()
    user = type(user).objects.get(pk=user.pk)  # a fresh permission cache
    assert user.has_perm("api.view_apikey")
    assert ApiKey.objects.get(user=user).name == "before the move"
    assert IdempotencyRecord.objects.filter(key="k-1").exists()
    response = client.get("/api/auth/api-keys", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200, response.content
