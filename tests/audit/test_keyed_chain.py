"""The keyed chain: whoever can write the database but lacks the key cannot re-hash the journal.

What an attacker with database access could do to the plain SHA-256 chain (edit a row, then recompute
every hash after it) passes the old check and fails the keyed one; a wrong key fails; keys rotate, and a key
that no longer seals (an old one, SECRET_KEY's once AUDIT_CHAIN_KEY is set, a fallback's) verifies only the
events it sealed, so the whole journal re-sealed with it fails; the plain SHA-256 events of a journal sealed
before the key existed verify only up to AUDIT_CHAIN_PLAIN_UNTIL.
"""

import pytest
from django.core.management import CommandError, call_command

from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, PLAIN, derived_key, event_hash, key_id, keyed_hash
from apps.audit.checks import audit_chain_keys_check
from apps.audit.models import AuditEvent
from apps.audit.services import audit_seal
from apps.audit.verify import chain_verify
from tests.audit.conftest import TABLE, record, sql

pytestmark = pytest.mark.django_db
KEY_A, KEY_B = "audit-key-a-0f1e2d3c4b5a69788796a5b4c3d2e1f0", "audit-key-b-8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"


def _rows() -> list[tuple]:
    return list(AuditEvent.objects.filter(sequence_num__isnull=False).order_by("sequence_num")
                .values_list(*HASHED_FIELDS, "chain_key_id", "event_hash"))


def rehash(first: int, *, digest, key_id_value: str, last: int | None = None) -> None:
    """What a forger does below the application: rewrite events `first` to `last` (the head), each linked to
    the one before it and hashed with `digest(row)`, labelled `key_id_value`."""
    prev = GENESIS_HASH if first == 1 else AuditEvent.objects.get(sequence_num=first - 1).event_hash
    for row in _rows()[first - 1:last]:
        row = (row[0], prev, *row[2:len(HASHED_FIELDS)])
        prev = digest(row)
        sql(f"UPDATE {TABLE} SET prev_hash = %s, event_hash = %s, chain_key_id = %s WHERE sequence_num = %s",
            [row[1], prev, key_id_value, row[0]])


def verifies_as_plain_sha256(first: int = 1) -> bool:
    """What the verification before the chain was keyed checked, from event `first` to the head: each event
    links to the hash of the one before it and its hash is the SHA-256 of its content. (Before the key,
    the events before `first` were plain SHA-256 too, and the forger left them alone.)"""
    rows = _rows()
    prev = GENESIS_HASH if first == 1 else rows[first - 2][-1]
    for n, row in enumerate(rows[first - 1:], start=first):
        if row[0] != n or row[1] != prev or event_hash(row) != row[-1]:
            return False
        prev = row[-1]
    return True


@pytest.mark.parametrize("relabel", [False, True], ids=["keeping-the-key-id", "marked-plain"])
def test_a_row_edited_and_rehashed_with_plain_sha256_is_found(chain, relabel):
    # The attacker edits event 5 and recomputes the chain from there with SHA-256, as the old scheme
    # allowed: the old check passes, the keyed one fails at event 5.
    sql(f"UPDATE {TABLE} SET actor = 'mallory', metadata = %s WHERE sequence_num = 5", ['{"i": 99}'])
    rehash(5, digest=event_hash, key_id_value=PLAIN if relabel else chain[4].chain_key_id)
    assert verifies_as_plain_sha256(first=5), "by construction, what the old check read is sound again"

    result = chain_verify()

    assert (result.valid, result.first_tampered, result.keyed_from) == (False, 5, 1)
    assert ("after event 4, sealed with a key" if relabel else "does not match its content") in result.reason


def test_a_journal_rehashed_from_its_first_event_with_plain_sha256_is_found(chain):
    # The whole journal re-hashed and marked plain (as if sealed before the key): refused past
    # AUDIT_CHAIN_PLAIN_UNTIL (0 by default: no plain event at all).
    sql(f"UPDATE {TABLE} SET error = 'rewritten' WHERE sequence_num = 2")
    rehash(1, digest=event_hash, key_id_value=PLAIN)
    assert verifies_as_plain_sha256()

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 1)
    assert "plain SHA-256 (no key), but every event after AUDIT_CHAIN_PLAIN_UNTIL (0) must be keyed" in result.reason


def test_a_row_rehashed_with_a_key_of_the_attackers_own_is_found(chain):
    mallory = b"mallory's own key"
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 3")
    rehash(3, digest=lambda row: keyed_hash(row, mallory), key_id_value=key_id(mallory))

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 3)
    assert "not one of the chain keys" in result.reason


def test_a_chain_sealed_with_one_key_fails_with_another(db, settings):
    settings.AUDIT_CHAIN_KEY = [KEY_A]
    record(4)
    audit_seal()
    assert chain_verify().valid

    settings.AUDIT_CHAIN_KEY = [KEY_B]  # the wrong key
    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 1)
    assert f"sealed with key {key_id(KEY_A.encode())}, which is not one of the chain keys" in result.reason


def test_keys_rotate_and_an_old_key_verifies_only_up_to_its_last_event(db, settings):
    settings.AUDIT_CHAIN_KEY = [KEY_A]
    record(3)
    audit_seal()
    # Rotation: the new key seals, the old one verifies the events it sealed, up to its @last event.
    settings.AUDIT_CHAIN_KEY = [KEY_B, f"{KEY_A}@3"]
    record(3)
    audit_seal()
    ids = list(AuditEvent.objects.order_by("sequence_num").values_list("chain_key_id", flat=True))
    assert ids == [key_id(KEY_A.encode())] * 3 + [key_id(KEY_B.encode())] * 3
    result = chain_verify()
    assert (result.valid, result.keyed_from, result.total_events) == (True, 1, 6)

    # Someone who holds only the old key rewrites event 5 with it: past the old key's last event.
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 5")
    rehash(5, digest=lambda row: keyed_hash(row, KEY_A.encode()), key_id_value=key_id(KEY_A.encode()))

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 5)
    assert f"sealed with key {key_id(KEY_A.encode())} (AUDIT_CHAIN_KEY's key 2), accepted up to event 3 " \
        "(its @3 in AUDIT_CHAIN_KEY)" in result.reason


def _reseal_all(key: bytes) -> None:
    """What a forger with database access and one key does: edit event 2, then re-seal every event after
    AUDIT_CHAIN_PLAIN_UNTIL (0: all of them) with that one key, as if it had sealed the whole journal."""
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 2")
    rehash(1, digest=lambda row: keyed_hash(row, key), key_id_value=key_id(key))


def _rotated_journal(settings) -> None:
    """Events 1-2 sealed with the key derived from SECRET_KEY (AUDIT_CHAIN_KEY unset), 3-4 with KEY_A once it
    was set, 5-6 with KEY_B after a rotation; the settings as docs/audit.md says to write them."""
    record(2)
    audit_seal()
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_DERIVED_UNTIL = [KEY_A], 2
    record(2)
    audit_seal()
    settings.AUDIT_CHAIN_KEY = [KEY_B, f"{KEY_A}@4"]
    record(2)
    audit_seal()


def test_a_legitimate_history_of_keys_verifies(db, settings):
    _rotated_journal(settings)

    result = chain_verify()

    ids = list(AuditEvent.objects.order_by("sequence_num").values_list("chain_key_id", flat=True))
    assert ids == [key_id(derived_key(settings.SECRET_KEY))] * 2 + [key_id(KEY_A.encode())] * 2 + \
        [key_id(KEY_B.encode())] * 2
    assert (result.valid, result.keyed_from, result.total_events) == (True, 1, 6)


def test_the_whole_journal_resealed_with_an_old_rotated_key_is_found(db, settings):
    _rotated_journal(settings)
    _reseal_all(KEY_A.encode())

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 5)
    assert f"sealed with key {key_id(KEY_A.encode())} (AUDIT_CHAIN_KEY's key 2), accepted up to event 4 " \
        "(its @4 in AUDIT_CHAIN_KEY)" in result.reason


@pytest.mark.parametrize("secret", ["SECRET_KEY", "SECRET_KEY_FALLBACKS"])
@pytest.mark.parametrize("derived_until", [0, 2])
def test_the_whole_journal_resealed_with_a_key_derived_from_secret_key_is_found(db, settings, secret, derived_until):
    # AUDIT_CHAIN_KEY is set: a key derived from SECRET_KEY (or a fallback) verifies only the events up to
    # AUDIT_CHAIN_DERIVED_UNTIL (0: none), those sealed before AUDIT_CHAIN_KEY was set.
    if derived_until:
        _rotated_journal(settings)
    else:
        settings.AUDIT_CHAIN_KEY = [KEY_A]
        record(6)
        audit_seal()
    if secret == "SECRET_KEY":
        stolen = derived_key(settings.SECRET_KEY)
    else:  # SECRET_KEY was rotated: the one that sealed the derived events is now a fallback
        old_secret = settings.SECRET_KEY
        settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-secret-key-now-fedcba9876543210", [old_secret]
        stolen = derived_key(old_secret)
    assert chain_verify().valid
    _reseal_all(stolen)

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, derived_until + 1)
    assert (f"sealed with key {key_id(stolen)} (derived from {secret}), accepted up to event {derived_until} "
            f"(AUDIT_CHAIN_DERIVED_UNTIL)") in result.reason


def test_with_audit_chain_key_unset_a_rotated_out_secret_key_verifies_only_up_to_audit_chain_derived_until(
        db, settings):
    old_secret = settings.SECRET_KEY
    record(3)
    audit_seal()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-secret-key-now-fedcba9876543210", [old_secret]
    record(2)
    audit_seal()

    unset = chain_verify()
    settings.AUDIT_CHAIN_DERIVED_UNTIL = 3
    accepted = chain_verify()
    _reseal_all(derived_key(old_secret))
    resealed = chain_verify()

    assert (unset.valid, unset.first_tampered) == (False, 1)
    assert "(derived from SECRET_KEY_FALLBACKS), accepted up to event 0 (AUDIT_CHAIN_DERIVED_UNTIL)" in unset.reason
    assert (accepted.valid, accepted.total_events) == (True, 5)
    assert (resealed.valid, resealed.first_tampered) == (False, 4)


@pytest.mark.parametrize("entry", ["{key}", "{key}@", "{key}@three"], ids=["no-at", "empty", "not-a-number"])
def test_an_old_key_without_its_last_event_fails_verification_saying_what_to_write(db, settings, entry):
    settings.AUDIT_CHAIN_KEY = [KEY_A]
    record(2)
    audit_seal()
    settings.AUDIT_CHAIN_KEY = [KEY_B, entry.format(key=KEY_A)]
    record(2)
    audit_seal()

    result = chain_verify()
    warnings = audit_chain_keys_check(None)

    assert (result.valid, result.first_tampered) == (False, None)
    assert (f"AUDIT_CHAIN_KEY's key 2 (key id {key_id(KEY_A.encode())}) must be written <key>@<the last event "
            "it sealed>") in result.reason
    assert [w.id for w in warnings] == ["audit.W002"] and result.reason in warnings[0].msg


def test_the_sealing_key_takes_no_last_event(db, settings):
    settings.AUDIT_CHAIN_KEY = [f"{KEY_B}@9", KEY_A]
    record(1)
    audit_seal()

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, None)
    assert "AUDIT_CHAIN_KEY's first key seals the new events: it takes no @<last event>" in result.reason


def _upgraded_journal(plain: int, keyed: int) -> None:
    """`plain` events sealed with plain SHA-256 (a journal from before the key), then `keyed` sealed now."""
    record(plain)
    audit_seal()
    rehash(1, digest=event_hash, key_id_value=PLAIN)  # as the old code sealed them
    record(keyed, resource_id="after-upgrade")
    audit_seal()


def test_a_journal_sealed_before_the_key_verifies_up_to_audit_chain_plain_until(db, settings):
    _upgraded_journal(plain=4, keyed=3)

    refused = chain_verify()
    settings.AUDIT_CHAIN_PLAIN_UNTIL = 4
    accepted = chain_verify()

    assert (refused.valid, refused.first_tampered) == (False, 1)
    assert "AUDIT_CHAIN_PLAIN_UNTIL (0)" in refused.reason
    assert (accepted.valid, accepted.keyed_from, accepted.total_events) == (True, 5, 7)


@pytest.mark.parametrize("through_the_head", [False, True], ids=["plain-span-only", "to-the-head"])
def test_the_plain_events_before_the_key_are_protected_by_the_first_keyed_event(db, settings, through_the_head):
    # A forger edits plain event 2 and re-hashes with SHA-256: up to event 4 only, event 5 (keyed) still
    # names the old hash of 4; through the head, event 5 becomes plain past AUDIT_CHAIN_PLAIN_UNTIL.
    _upgraded_journal(plain=4, keyed=3)
    settings.AUDIT_CHAIN_PLAIN_UNTIL = 4
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 2")
    rehash(2, digest=event_hash, key_id_value=PLAIN, last=None if through_the_head else 4)
    assert verifies_as_plain_sha256() is through_the_head

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 5)
    assert ("AUDIT_CHAIN_PLAIN_UNTIL (4)" if through_the_head else "prev_hash") in result.reason


def test_the_verify_endpoint_reports_the_keyed_span_and_a_plain_rehash(operator_client, chain):
    sound = operator_client.post("/api/audit/verify")
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 8")
    rehash(8, digest=event_hash, key_id_value=PLAIN)
    broken = operator_client.post("/api/audit/verify")

    assert sound.status_code == broken.status_code == 200
    assert sound.json()["valid"] and sound.json()["keyed_from"] == 1 and sound.json()["anchors_checked"] == 0
    assert (broken.json()["valid"], broken.json()["first_tampered"]) == (False, 8)


def test_the_command_fails_with_a_wrong_key(db, settings):
    settings.AUDIT_CHAIN_KEY = [KEY_A]
    record(2)
    audit_seal()
    settings.AUDIT_CHAIN_KEY = [KEY_B]

    with pytest.raises(CommandError) as failure:
        call_command("verify_audit", "--no-record")

    assert failure.value.returncode == 1
    assert "BROKEN at event 1" in str(failure.value)
