"""The hash chain, step 2: chain the rows written before the chain existed, in id order (their order
of writing), in batches, with the functions the application appends with (apps/audit/chain.py)."""

from django.db import migrations

BATCH = 2000


def chain_existing_rows(apps, schema_editor):
    from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash, parse_actor

    AuditEvent = apps.get_model("audit", "AuditEvent")  # the historical model: a plain manager, updates allowed
    db = schema_editor.connection.alias
    rows = AuditEvent.objects.using(db).order_by("id")
    sequence, prev, last_id = 0, GENESIS_HASH, 0
    while True:
        batch = list(rows.filter(id__gt=last_id)[:BATCH])
        if not batch:
            return
        for event in batch:
            sequence += 1
            event.user_id, event.api_key_prefix = parse_actor(event.actor)
            event.sequence_num, event.prev_hash = sequence, prev
            event.event_hash = prev = event_hash(tuple(getattr(event, name) for name in HASHED_FIELDS))
        AuditEvent.objects.using(db).bulk_update(
            batch, ["sequence_num", "prev_hash", "event_hash", "user_id", "api_key_prefix"], batch_size=500
        )
        last_id = batch[-1].id


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0002_chain_fields"),
    ]

    operations = [
        migrations.RunPython(chain_existing_rows, migrations.RunPython.noop, elidable=False),
    ]
