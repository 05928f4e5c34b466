"""The hash chain, step 3: sequence_num unique (null only until a new row is sealed), the indexes."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0003_chain_existing_rows'),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.CharField(help_text='username, username (apikey:<prefix>), or system', max_length=150),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='event_hash',
            field=models.CharField(blank=True, help_text='SHA-256 of the canonical serialisation (apps/audit/chain.py)', max_length=64),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(blank=True, help_text='event_hash of the previous event (64 zeros for the first)', max_length=64),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='sequence_num',
            field=models.PositiveBigIntegerField(blank=True, help_text='Position in the chain: 1, 2, 3, ... without gaps (null until sealed, a moment after commit)', null=True, unique=True),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(fields=['resource_type', 'resource_id'], name='audit_resource_idx'),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('sequence_num__isnull', True)), fields=['id'], name='audit_unsealed_idx'),
        ),
    ]
