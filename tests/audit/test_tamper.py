"""Tampering below the application (raw SQL) is found, at the right place, each time."""

import json
import threading

import pytest

from apps.audit.chain import keyed_hash
from apps.audit.keys import chain_keys
from apps.audit.verify import chain_verify
from tests.audit.conftest import TABLE, record, sql

pytestmark = pytest.mark.django_db


def test_an_edited_field_is_found_at_its_event(chain):
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 4")

    result = chain_verify(chunk_size=3)

    assert (result.valid, result.first_tampered) == (False, 4)
    assert "does not match its content" in result.reason
    assert result.total_events == 10


@pytest.mark.parametrize("column, value", [
    ("metadata", json.dumps({"i": 99})),
    ("success", False),
    ("timestamp", "2020-01-01 00:00:00+00:00"),
    ("event_hash", "f" * 64),
])
def test_an_edit_of_any_column_is_found(chain, column, value):
    sql(f"UPDATE {TABLE} SET {column} = %s WHERE sequence_num = 7", [value])

    assert chain_verify().first_tampered == 7


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(chain):
    # A forger who has the key fixes event 5's own hash; event 6 still points at the old one. (Without the
    # key, event 5's own hash cannot be fixed: tests/audit/test_keyed_chain.py.)
    fields = ("sequence_num", "prev_hash", "timestamp", "event_type", "actor", "user_id", "api_key_prefix",
              "resource_type", "resource_id", "action", "success", "ip_address", "error", "trace_id", "metadata")
    forged = chain[4]
    forged.actor = "mallory"
    digest = keyed_hash(tuple(getattr(forged, name) for name in fields), chain_keys().seal_key)
    sql(f"UPDATE {TABLE} SET actor = 'mallory', event_hash = %s WHERE sequence_num = 5", [digest])

    result = chain_verify()

    assert result.first_tampered == 6
    assert "prev_hash" in result.reason


def test_a_deleted_event_is_found_as_the_missing_number(chain):
    sql(f"DELETE FROM {TABLE} WHERE sequence_num = 5")

    result = chain_verify(chunk_size=4)

    assert (result.valid, result.first_tampered) == (False, 5)
    assert "missing" in result.reason
    assert result.total_events == 9


def test_a_deleted_first_event_is_found(chain):
    sql(f"DELETE FROM {TABLE} WHERE sequence_num = 1")

    assert chain_verify().first_tampered == 1


def test_a_deletion_hidden_by_renumbering_is_found(chain):
    sql(f"DELETE FROM {TABLE} WHERE sequence_num = 5")
    for n in range(6, 11):
        sql(f"UPDATE {TABLE} SET sequence_num = %s WHERE sequence_num = %s", [n - 1, n])

    result = chain_verify()

    assert result.first_tampered == 5
    assert "prev_hash" in result.reason


def test_two_swapped_events_are_found_at_the_first(chain):
    # Swap the contents of 3 and 8 by swapping their sequence numbers (through a free number: unique).
    sql(f"UPDATE {TABLE} SET sequence_num = 1000 WHERE sequence_num = 3")
    sql(f"UPDATE {TABLE} SET sequence_num = 3 WHERE sequence_num = 8")
    sql(f"UPDATE {TABLE} SET sequence_num = 8 WHERE sequence_num = 1000")

    assert chain_verify().first_tampered == 3


def test_adjacent_swapped_events_are_found(chain):
    sql(f"UPDATE {TABLE} SET sequence_num = 1000 WHERE sequence_num = 6")
    sql(f"UPDATE {TABLE} SET sequence_num = 6 WHERE sequence_num = 7")
    sql(f"UPDATE {TABLE} SET sequence_num = 7 WHERE sequence_num = 1000")

    assert chain_verify().first_tampered == 6


def _insert_copy_of(event, *, sequence_num, prev_hash, event_hash_value):
    sql(
        f"INSERT INTO {TABLE} (sequence_num, prev_hash, event_hash, timestamp, event_type, actor, user_id, "
        "api_key_prefix, resource_type, resource_id, action, success, ip_address, error, trace_id, metadata) "
        "VALUES (%s, %s, %s, %s, 'forged.event', 'mallory', NULL, '', 'thing', 'x', 'forge', %s, NULL, '', '', '{}')",
        [sequence_num, prev_hash, event_hash_value, event.timestamp, True],
    )


def test_an_event_inserted_in_the_middle_is_found(chain):
    for n in range(10, 4, -1):  # make room after event 4
        sql(f"UPDATE {TABLE} SET sequence_num = %s WHERE sequence_num = %s", [n + 1, n])
    _insert_copy_of(chain[3], sequence_num=5, prev_hash=chain[3].event_hash, event_hash_value="0" * 64)

    result = chain_verify()

    assert result.first_tampered == 5
    assert result.total_events == 11


def test_an_event_appended_with_a_made_up_hash_is_found(chain):
    _insert_copy_of(chain[-1], sequence_num=11, prev_hash=chain[-1].event_hash, event_hash_value="a" * 64)

    assert chain_verify().first_tampered == 11


def test_the_first_of_several_tamperings_is_reported(chain):
    sql(f"DELETE FROM {TABLE} WHERE sequence_num = 8")
    sql(f"UPDATE {TABLE} SET error = 'edited' WHERE sequence_num = 2")

    assert chain_verify().first_tampered == 2


@pytest.mark.django_db(transaction=True)
def test_a_committed_journal_is_checked_chunk_by_chunk_and_stops_at_the_first_tampering():
    # Committed rows, verified outside any transaction: on PostgreSQL a helper thread reads ahead.
    record(60)
    assert chain_verify(chunk_size=7).valid
    sql(f"UPDATE {TABLE} SET action = 'edited' WHERE sequence_num = 12")
    seen = []

    result = chain_verify(chunk_size=7, progress=lambda done, total: seen.append(done))

    assert (result.valid, result.first_tampered, result.total_events) == (False, 12, 60)
    assert seen == [7], "verification stops in the chunk of the first tampered event"
    assert not [t for t in threading.enumerate() if t.name == "audit-verify-reader"]
