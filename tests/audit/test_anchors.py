"""Anchors: the head of the chain written outside the database (a directory, moto's S3 over HTTP), and the
verification holding the journal against them: a truncated tail, or a rewrite by someone with the key."""

import json
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import boto3
import pytest
from botocore.config import Config
from django.core.management import CommandError, call_command

from apps.audit.chain import HASHED_FIELDS, anchor_mac, keyed_hash
from apps.audit.keys import chain_keys
from apps.audit.models import AuditEvent
from apps.audit.services import audit_anchor, audit_seal
from apps.audit.tasks import audit_anchor_tick
from apps.audit.verify import chain_verify
from tests.audit.conftest import TABLE, sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def anchor_dir(settings, tmp_path):
    settings.AUDIT_ANCHOR_DIR = str(tmp_path / "anchors")
    return tmp_path / "anchors"


def _s3(endpoint_url: str):
    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-west-2",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def moto_s3(ec2_sim):
    """moto's S3 itself, for the test's own look (the fault proxy the application goes through answers
    with the body and Content-Type only, not the object-lock headers)."""
    return _s3(ec2_sim.moto_url)


@pytest.fixture(params=["plain", "object-lock"])
def anchor_bucket(request, settings, moto_s3):
    """A bucket of its own on moto's S3 (the session's simulator, over HTTP), with or without Object Lock."""
    name = f"anchors-{uuid.uuid4().hex[:12]}"
    kwargs = {"Bucket": name, "CreateBucketConfiguration": {"LocationConstraint": settings.AWS_REGION}}
    if request.param == "object-lock":
        kwargs["ObjectLockEnabledForBucket"] = True
    moto_s3.create_bucket(**kwargs)
    settings.AUDIT_ANCHOR_BUCKET = name
    return name, request.param == "object-lock"


def test_an_anchor_goes_to_the_directory_and_is_journalled_and_shown(chain, anchor_dir, operator_client):
    out = _call("anchor_audit")  # seals first: the head is the last event before the anchoring's own
    audit_seal()  # the anchoring's own event (this test's transaction never commits)

    (path,) = anchor_dir.glob("*.json")
    anchor = json.loads(path.read_text())
    journalled = AuditEvent.objects.get(event_type="audit.anchored")
    head = AuditEvent.objects.get(sequence_num=journalled.sequence_num - 1)
    assert path.name.startswith(f"{head.sequence_num:012d}-")
    assert (anchor["sequence_num"], anchor["event_hash"]) == (head.sequence_num, head.event_hash)
    assert anchor["key_id"] == chain_keys().seal_id
    assert anchor["mac"] == anchor_mac(sequence_num=head.sequence_num, event_hash=head.event_hash,
                                       anchored_at=anchor["anchored_at"], key_id=anchor["key_id"],
                                       key=chain_keys().seal_key)
    assert path.stat().st_mode & 0o222 == 0, "written read-only"
    assert f"Anchored event {head.sequence_num} ({head.event_hash}) in {path}" in out
    assert journalled.success and journalled.metadata["locations"] == [str(path)]

    root = operator_client.get("/api/audit/chain-root").json()
    assert root["last_anchor"]["sequence_num"] == head.sequence_num
    assert root["last_anchor"]["locations"] == [str(path)]
    result = chain_verify()
    assert (result.valid, result.anchors_checked) == (True, 1)


def test_truncating_the_journal_after_an_anchor_is_found(chain, anchor_dir):
    audit_anchor(actor="tests")  # anchors event 10; event 11 journals the anchoring
    assert chain_verify().valid
    sql(f"DELETE FROM {TABLE} WHERE sequence_num > 7")  # the tail cut off: what is left is a sound chain

    result = chain_verify()

    assert (result.valid, result.first_tampered, result.total_events) == (False, 8, 7)
    assert "events 8 to 10 are missing: event 10 was anchored in" in result.reason


def test_a_rewrite_by_someone_with_the_key_is_found_against_the_anchor(chain, anchor_dir, settings):
    audit_anchor(actor="tests")
    # Someone with the key and the database edits event 3 and re-hashes everything after it.
    key = chain_keys().seal_key
    sql(f"UPDATE {TABLE} SET actor = 'mallory' WHERE sequence_num = 3")
    prev = AuditEvent.objects.get(sequence_num=2).event_hash
    for row in AuditEvent.objects.filter(sequence_num__gte=3).order_by("sequence_num").values_list(*HASHED_FIELDS):
        prev_row, prev = prev, keyed_hash((row[0], prev, *row[2:]), key)
        sql(f"UPDATE {TABLE} SET prev_hash = %s, event_hash = %s WHERE sequence_num = %s", [prev_row, prev, row[0]])
    settings.AUDIT_ANCHOR_DIR = ""
    assert chain_verify().valid, "without the anchor, the key holder's rewrite verifies"
    settings.AUDIT_ANCHOR_DIR = str(anchor_dir)

    result = chain_verify()

    assert (result.valid, result.first_tampered) == (False, 10)
    assert "event 10: its hash is not the one anchored in" in result.reason


def test_an_anchor_made_up_without_the_key_is_refused(chain, anchor_dir):
    anchor_dir.mkdir()
    forged = {"sequence_num": 3, "event_hash": "f" * 64, "anchored_at": "2026-12-07T00:00:00.000000+00:00",
              "key_id": chain_keys().seal_id, "mac": "0" * 64}
    (anchor_dir / "000000000003-forged.json").write_text(json.dumps(forged))

    result = chain_verify()

    assert not result.valid
    assert "MAC does not verify" in result.reason and "000000000003-forged.json" in result.reason


def test_anchors_go_to_s3_with_object_lock_retention_when_the_bucket_has_it(chain, anchor_bucket, settings, moto_s3):
    bucket, locked = anchor_bucket

    (anchor,) = audit_anchor(actor="tests")

    key = anchor.location.removeprefix(f"s3://{bucket}/")
    assert key.startswith("audit-anchors/000000000010-")
    stored = json.loads(moto_s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert (stored["sequence_num"], stored["event_hash"]) == (10, chain[-1].event_hash)
    head = moto_s3.head_object(Bucket=bucket, Key=key)
    if locked:
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        expected = datetime.now(dt_timezone.utc) + timedelta(days=settings.AUDIT_ANCHOR_RETENTION_DAYS)
        assert abs(until - expected) < timedelta(hours=1)
    else:
        assert "ObjectLockMode" not in head
    assert (chain_verify().valid, chain_verify().anchors_checked) == (True, 1)

    sql(f"DELETE FROM {TABLE} WHERE sequence_num >= 9")
    result = chain_verify()
    assert (result.valid, result.first_tampered) == (False, 9)
    assert f"anchored in s3://{bucket}/{key}" in result.reason


def test_an_unreachable_anchor_store_fails_the_verification_and_the_anchoring(chain, settings):
    settings.AUDIT_ANCHOR_BUCKET = f"missing-{uuid.uuid4().hex[:12]}"

    result = chain_verify()
    with pytest.raises(CommandError) as failure:
        call_command("anchor_audit")

    assert not result.valid and "cannot read the anchors" in result.reason
    assert failure.value.returncode == 1 and "NOT anchored" in str(failure.value)
    assert not AuditEvent.objects.get(event_type="audit.anchored").success


def test_the_schedule_anchors_only_when_a_store_is_configured(chain, settings, tmp_path):
    assert settings.Q_SCHEDULES["audit_anchor"]["func"] == "apps.audit.tasks.audit_anchor_tick"
    assert audit_anchor_tick() is None
    assert not AuditEvent.objects.filter(event_type="audit.anchored").exists()

    settings.AUDIT_ANCHOR_DIR = str(tmp_path)
    assert audit_anchor_tick() == 10
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_anchoring_without_a_store_is_refused(chain):
    with pytest.raises(CommandError, match="no anchor store"):
        call_command("anchor_audit")


def _call(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()
