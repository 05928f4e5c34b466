"""Who a session and a lab belong to, kept when the user is deleted (issue 19): Session.owner_key is
"user:<id>" or blank (anonymous); SessionLab.owner_key is the principal whose session started it. Existing
sessions get their user's key; a running lab gets the key of the session holding it, if any (an idle lab
of before stays nobody's: the next acquire on its worker replaces it)."""

from django.db import migrations, models
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat


def fill_owner_keys(apps, schema_editor):
    Session = apps.get_model("lab_sessions", "Session")
    SessionLab = apps.get_model("lab_sessions", "SessionLab")
    LabClaim = apps.get_model("lab_sessions", "LabClaim")
    Session.objects.filter(owner__isnull=False).update(
        owner_key=Concat(Value("user:"), Cast("owner_id", CharField()), output_field=CharField()))
    for lab in SessionLab.objects.exclude(status="empty"):  # one row per worker
        claim = LabClaim.objects.filter(lab_id=lab.pk).order_by("created_at").first()
        session = claim and Session.objects.filter(pk=claim.session_id).first()
        if session is not None:
            SessionLab.objects.filter(pk=lab.pk).update(owner_key=session.owner_key or "anonymous")


class Migration(migrations.Migration):

    dependencies = [
        ('lab_sessions', '0006_derived_positions'),
    ]

    operations = [
        migrations.AddField(
            model_name='session',
            name='owner_key',
            field=models.CharField(blank=True, editable=False, help_text='user:<id>, or blank for an anonymous client (kept if the user is deleted).', max_length=64),
        ),
        migrations.AddField(
            model_name='sessionlab',
            name='owner_key',
            field=models.CharField(blank=True, help_text='user:<id>, or anonymous, whose session started it.', max_length=64),
        ),
        migrations.RunPython(fill_owner_keys, migrations.RunPython.noop),
    ]
