"""Workers' CML passwords are encrypted at rest: the column is renamed and every plain password in it is
replaced by its Fernet token (apps.core.encryption; the key from FIELD_ENCRYPTION_KEY or SECRET_KEY)."""

from django.db import migrations, models

from apps.core.encryption import DecryptionFailed, decrypt, encrypt


def encrypt_plain_passwords(apps, schema_editor):
    """Idempotent: a value that already decrypts is left alone."""
    Worker = apps.get_model("workers", "Worker")
    for pk, value in Worker.objects.exclude(cml_password_encrypted="").values_list("pk", "cml_password_encrypted"):
        try:
            decrypt(value)
        except DecryptionFailed:
            Worker.objects.filter(pk=pk).update(cml_password_encrypted=encrypt(value))


def decrypt_passwords(apps, schema_editor):
    Worker = apps.get_model("workers", "Worker")
    for pk, value in Worker.objects.exclude(cml_password_encrypted="").values_list("pk", "cml_password_encrypted"):
        try:
            Worker.objects.filter(pk=pk).update(cml_password_encrypted=decrypt(value))
        except DecryptionFailed:
            pass  # already plain


class Migration(migrations.Migration):

    dependencies = [
        ("workers", "0005_worker_cml_tls_verify"),
    ]

    operations = [
        migrations.RenameField(model_name="worker", old_name="cml_password", new_name="cml_password_encrypted"),
        migrations.AlterField(
            model_name="worker",
            name="cml_password_encrypted",
            field=models.CharField(blank=True, editable=False, max_length=500),
        ),
        migrations.RunPython(encrypt_plain_passwords, decrypt_passwords),
    ]
