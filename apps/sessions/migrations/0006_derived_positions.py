"""Queue positions are derived when read (apps.sessions.models.Session.position), and tickets come from a
sequence on PostgreSQL: a new session no longer locks its pool's row (docs/remote-lab.md). The live
queue's index goes by ticket; the stored position goes. The sequence starts past every ticket handed out."""

from django.db import migrations, models

import apps.core.indexes

TICKETS = "lab_sessions_ticket_seq"


def create_ticket_sequence(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite: the pool's counter (writers are serialised there anyway)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"CREATE SEQUENCE IF NOT EXISTS {TICKETS} AS bigint")
        cursor.execute(f"SELECT setval('{TICKETS}', GREATEST((SELECT COALESCE(MAX(next_ticket), 1) "
                       "FROM lab_sessions_sessionpool), (SELECT COALESCE(MAX(ticket), 0) + 1 "
                       "FROM lab_sessions_session)), false)")


def drop_ticket_sequence(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"DROP SEQUENCE IF EXISTS {TICKETS}")


class Migration(migrations.Migration):

    dependencies = [
        ("lab_sessions", "0005_claim_without_db_constraint"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="session", name="session_pool_queue"),
        migrations.RemoveField(model_name="session", name="position"),
        migrations.AddIndex(
            model_name="session",
            index=apps.core.indexes.PostgresPartialIndex(
                condition=models.Q(("status__in", ["waiting", "active"])), fields=["pool", "status", "ticket"],
                name="session_pool_queue"),
        ),
        migrations.RunPython(create_ticket_sequence, drop_ticket_sequence),
    ]
