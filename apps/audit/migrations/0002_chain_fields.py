"""The hash chain, step 1: the new columns, nullable while the existing rows get their chain (0003)."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="sequence_num",
            field=models.PositiveBigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="event_hash",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="user_id",
            field=models.CharField(
                blank=True, db_index=True, max_length=150, null=True,
                help_text="username of the acting user (null for system jobs and anonymous callers)",
            ),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="api_key_prefix",
            field=models.CharField(blank=True, default="", max_length=32, help_text="prefix of the API key used, if any"),
            preserve_default=False,
        ),
        # The timestamp is set by the append (under the chain lock) and hashed: no auto_now_add.
        migrations.AlterField(
            model_name="auditevent",
            name="timestamp",
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now),
        ),
    ]
