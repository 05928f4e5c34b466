"""The queue's indexes on PostgreSQL hold only live (waiting, active) sessions, so that reaping 100,000
sessions writes no entry into them (docs/performance.md), and the queue's queries can still use them:
the planner must prove from each query's WHERE that its rows are live. Sequential scans are switched off
in these checks, so a plan without the index means the index cannot serve the query, not that a scan of
a small table was cheaper."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.sessions.models import Session, SessionStatus
from apps.sessions.services.queue import stale_sessions

pytestmark = [
    pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="partial and BRIN indexes: PostgreSQL only"),
    pytest.mark.django_db,
]


LIVE_INDEXES = ("session_pool_queue", "session_staleness", "session_unique_ticket")


def _indexes(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_queue_indexes_leave_history_out_and_the_session_has_no_owner_or_worker_index():
    indexes = _indexes(Session._meta.db_table)
    for name in LIVE_INDEXES:
        assert "WHERE ((status)::text = ANY" in indexes[name], indexes[name]
    assert "UNIQUE" in indexes["session_unique_ticket"]
    # Only the partial unique index on active sessions mentions the worker; nothing indexes the owner.
    assert [name for name, definition in indexes.items() if "worker_id" in definition] == ["session_one_active_per_worker"]
    assert not [name for name, definition in indexes.items() if "owner_id" in definition]


def _uses_a_live_index(plan: str) -> bool:
    return "Seq Scan" not in plan and any(name in plan for name in (*LIVE_INDEXES, "session_one_active_per_worker"))


def test_the_queue_queries_can_use_the_partial_indexes():
    """On an empty table the planner may take any of the three; what matters is that it may take them."""
    now = timezone.now()
    queries = {
        "reaping": stale_sessions(now=now, pool_ids=[1]),
        "reaping, two pools": stale_sessions(now=now, pool_ids=[1, 2]),
        "position": Session.objects.filter(pool_id=1, status=SessionStatus.WAITING, ticket__lt=3).order_by(),
        "head of the queue": Session.objects.filter(pool_id=1, status=SessionStatus.WAITING).order_by("ticket")[:1],
        "active ones": Session.objects.filter(pool_id=1, status=SessionStatus.ACTIVE).order_by(),
    }
    for label, queryset in queries.items():
        plan = _plan(queryset)
        assert _uses_a_live_index(plan), f"{label}:\n{plan}"
    # A query that does not say its rows are live cannot use them: the check above can fail.
    assert not _uses_a_live_index(_plan(Session.objects.filter(pool_id=1).order_by()))
    # History is found by its end time (the reaping's batch, the purge).
    assert "session_ended" in _plan(Session.objects.filter(status=SessionStatus.REAPED, ended_at=now).order_by())
    assert "USING brin" in _indexes(Session._meta.db_table)["session_ended"]


def test_the_journal_timestamp_index_is_brin_and_serves_time_ranges():
    assert "USING brin" in _indexes(AuditEvent._meta.db_table)["audit_timestamp_idx"]
    assert "audit_timestamp_idx" in _plan(AuditEvent.objects.filter(timestamp__gte=timezone.now() - timedelta(hours=1)))
