"""The chain stays linear and gapless with concurrent writers, each on its own connection
(PostgreSQL only: SQLite serialises every writer, so it cannot show a race)."""

import threading

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_record_many
from apps.audit.verify import chain_verify
from tests.waiting import another_backend_waits_on_a_lock, wait_until

pytestmark = [
    pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="needs concurrent writers: PostgreSQL only"),
    pytest.mark.django_db(transaction=True),
]

WRITERS = 8
APPENDS = 60


def _run(targets, timeout=120):
    errors = []

    def guarded(target):
        def run():
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
            finally:
                connection.close()
        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a writer hung"
    assert errors == []


def _writer(n, barrier):
    def write():
        barrier.wait(timeout=30)
        for i in range(APPENDS):
            with transaction.atomic():
                audit_record(event_type="thing.made", actor=f"writer-{n}", resource_type="thing",
                             resource_id=f"{n}-{i}", action="thing.make", metadata={"writer": n, "i": i})
    return write


def _assert_linear_and_gapless(expected_total):
    numbers = list(AuditEvent.objects.order_by("sequence_num").values_list("sequence_num", flat=True))
    assert numbers == list(range(1, expected_total + 1))
    result = chain_verify(chunk_size=100)
    assert (result.valid, result.total_events, result.first_tampered) == (True, expected_total, None)


def test_eight_concurrent_writers_make_one_gapless_chain():
    barrier = threading.Barrier(WRITERS)

    _run([_writer(n, barrier) for n in range(WRITERS)])

    _assert_linear_and_gapless(WRITERS * APPENDS)
    for n in range(WRITERS):  # each writer's events keep their order in the chain
        mine = list(AuditEvent.objects.filter(actor=f"writer-{n}").order_by("sequence_num")
                    .values_list("metadata__i", flat=True))
        assert mine == list(range(APPENDS))


def test_a_batch_is_chained_among_concurrent_single_appends():
    barrier = threading.Barrier(WRITERS)

    def batch():
        barrier.wait(timeout=30)
        # land among the single appends: once some of them are committed (not a guess at how long that takes)
        wait_until(lambda: AuditEvent.objects.filter(event_type="thing.made").count() >= WRITERS - 1, timeout=30,
                   what="the single appends to start")
        for round_no in range(3):
            with transaction.atomic():
                audit_record_many([
                    {"event_type": "thing.placed", "actor": "system", "resource_type": "thing",
                     "resource_id": f"batch-{round_no}-{i}", "action": "thing.place"}
                    for i in range(1000)
                ])

    _run([_writer(n, barrier) for n in range(WRITERS - 1)] + [batch])

    _assert_linear_and_gapless((WRITERS - 1) * APPENDS + 3000)
    for round_no in range(3):  # each batch keeps its order in the chain (other writers' ids may interleave)
        ids = list(AuditEvent.objects.filter(resource_id__startswith=f"batch-{round_no}-")
                   .order_by("sequence_num").values_list("resource_id", flat=True))
        assert ids == [f"batch-{round_no}-{i}" for i in range(1000)]


def test_journalling_never_deadlocks_with_the_callers_row_locks():
    # A booking journals "created" and then locks a worker to place it, while the scheduler pass locks
    # every worker, plans, and then journals its placements: the two orders must not deadlock.
    group = Group.objects.create(name="locked")
    holding = threading.Event()

    def lock_then_journal():
        with transaction.atomic():
            Group.objects.select_for_update().get(pk=group.pk)
            holding.set()
            # journal only once the other transaction has journalled and waits for this row lock
            wait_until(another_backend_waits_on_a_lock, timeout=10, what="journal_then_lock to wait for the row lock")
            audit_record(event_type="group.locked", actor="a", resource_type="group", resource_id="1", action="lock")

    def journal_then_lock():
        assert holding.wait(10)
        with transaction.atomic():
            audit_record(event_type="group.locked", actor="b", resource_type="group", resource_id="1", action="lock")
            Group.objects.select_for_update().get(pk=group.pk)

    _run([lock_then_journal, journal_then_lock], timeout=30)

    _assert_linear_and_gapless(2)
