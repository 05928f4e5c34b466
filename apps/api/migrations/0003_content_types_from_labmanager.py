"""The content types (and so the permissions and admin log entries) of ApiKey and IdempotencyRecord were
the `labmanager` app's: they become this app's. A new database has none to move."""

from django.db import migrations


def forward(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    taken = set(ContentType.objects.filter(app_label="api").values_list("model", flat=True))
    ContentType.objects.filter(app_label="labmanager").exclude(model__in=taken).update(app_label="api")


def backward(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="api", model__in=["apikey", "idempotencyrecord"]).update(
        app_label="labmanager")


class Migration(migrations.Migration):

    dependencies = [
        ("api", "0002_apikey_role_expiry"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forward, backward)]
