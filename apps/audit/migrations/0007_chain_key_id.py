"""The keyed chain: each row names the key that sealed it. The rows sealed before get an empty id: plain
SHA-256, as they were sealed (they verify as such, up to AUDIT_CHAIN_PLAIN_UNTIL: docs/audit.md)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0006_timestamp_brin'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='chain_key_id',
            field=models.CharField(blank=True, db_default='', default='', help_text='Id of the key that sealed the event (empty: plain SHA-256, sealed before the chain was keyed)', max_length=16),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='event_hash',
            field=models.CharField(blank=True, help_text="HMAC-SHA256 of the canonical serialisation, keyed by chain_key_id's key (apps/audit/chain.py)", max_length=64),
        ),
    ]
