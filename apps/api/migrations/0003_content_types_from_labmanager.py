"""The content types of ApiKey and IdempotencyRecord (and so the permissions granted on them and the admin's
log entries) were the `labmanager` app's: they become this app's. A new database has none to move.

A `migrate` of one app run before the full one (post_migrate runs every time) may already have made fresh
`api` content types and permissions for these models, granted to nobody: those give way to the old ones,
which carry the grants and the log entries."""

from django.db import migrations

MODELS = ("apikey", "idempotencyrecord")


def _move(apps, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        old = ContentType.objects.filter(app_label=source, model=model).first()
        if old is None:
            continue
        ContentType.objects.filter(app_label=target, model=model).delete()  # cascades to its fresh permissions
        old.app_label = target
        old.save(update_fields=["app_label"])


def forward(apps, schema_editor):
    _move(apps, "labmanager", "api")


def backward(apps, schema_editor):
    _move(apps, "api", "labmanager")


class Migration(migrations.Migration):

    dependencies = [
        ("api", "0002_apikey_role_expiry"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),  # the cascade reaches permissions and log entries
        ("admin", "0003_logentry_add_action_flag_choices"),
    ]

    operations = [migrations.RunPython(forward, backward)]
