"""Helpers of the audit tests: write events the way services do, and tamper with rows below the ORM."""

import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_seal

TABLE = AuditEvent._meta.db_table


def record(n: int = 1, *, event_type: str = "test.happened", actor: str = "tests", resource_type: str = "thing",
           resource_id: str | None = None) -> None:
    """`n` events, each in its own transaction, like n service calls."""
    for i in range(n):
        with transaction.atomic():
            audit_record(event_type=event_type, actor=actor, resource_type=resource_type,
                         resource_id=resource_id or f"t-{i}", action="test.do",
                         metadata={"i": i, "nested": {"b": [1, 2.5], "a": None}})


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


@pytest.fixture
def chain(db):
    """Ten sealed events (the test transaction never commits, so seal by hand as a commit would)."""
    record(10)
    audit_seal()
    return list(AuditEvent.objects.filter(sequence_num__isnull=False).order_by("sequence_num"))
