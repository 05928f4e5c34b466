"""Waiting in tests: on a condition, bounded, never on the wall clock alone.

`wait_until(predicate)` polls until `predicate()` is truthy and returns that value, or fails the test after
`timeout` seconds; the only sleep is the poll interval. For a rule about time itself (a TTL, a refill, a
lease) do not wait: freeze the clock (freezegun), pass the code its `now`, or set the stored timestamps.
"""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str = "the condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # the poll interval


def another_backend_waits_on_a_lock() -> bool:
    """PostgreSQL: another backend of this database waits for a lock (e.g. a row lock this test holds)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees its first snapshot throughout
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0
