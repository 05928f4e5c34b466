"""Anchors: the head of the chain written outside the database, where its writers cannot reach.

An anchor is a small JSON document, `{"sequence_num", "event_hash", "anchored_at", "key_id", "mac"}`
(`mac`: HMAC-SHA256 of the other fields with the chain key `key_id`: apps/audit/chain.py anchor_mac), named
`<sequence_num, 12 digits>-<anchored_at>.json`, written to each configured store:

- AUDIT_ANCHOR_DIR: a directory (a mount of another host, a WORM volume); files created read-only,
  never overwritten;
- AUDIT_ANCHOR_BUCKET (AUDIT_ANCHOR_PREFIX): an S3 bucket, which must exist. When the bucket has S3 Object
  Lock, each anchor is put with COMPLIANCE retention for AUDIT_ANCHOR_RETENTION_DAYS unless the bucket has
  a default retention rule of its own (S3 then applies that one).

A thin gateway (files and boto3), no ORM: apps/audit/services.py writes anchors (audit_anchor),
apps/audit/verify.py reads them. docs/audit.md#anchors.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

FIELDS = ("sequence_num", "event_hash", "anchored_at", "key_id", "mac")
S3_READERS = 16  # anchors fetched at once from the bucket


class AnchorError(Exception):
    """A store could not be written or read (a directory missing or not writable, S3 unreachable)."""


@dataclass(frozen=True)
class Anchor:
    sequence_num: int
    event_hash: str
    anchored_at: str
    key_id: str
    mac: str
    location: str  # where it was written / read: a path or s3://bucket/key

    def document(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


class BadAnchor(Exception):
    """A stored object that is not an anchor document (its location is the argument)."""


def anchors_configured() -> bool:
    return bool(settings.AUDIT_ANCHOR_DIR or settings.AUDIT_ANCHOR_BUCKET)


def anchor_name(sequence_num: int, anchored_at: datetime) -> str:
    return f"{sequence_num:012d}-{anchored_at.strftime('%Y%m%dT%H%M%S%fZ')}.json"


def anchors_write(anchor: Anchor, *, name: str) -> list[str]:
    """Write the anchor to every configured store; returns where it went. Raises AnchorError."""
    body = (json.dumps(anchor.document(), sort_keys=True, indent=1) + "\n").encode()
    locations = []
    if settings.AUDIT_ANCHOR_DIR:
        locations.append(_dir_write(Path(settings.AUDIT_ANCHOR_DIR), name, body))
    if settings.AUDIT_ANCHOR_BUCKET:
        locations.append(_s3_write(settings.AUDIT_ANCHOR_BUCKET, settings.AUDIT_ANCHOR_PREFIX + name, body))
    return locations


def anchors_read() -> list[Anchor]:
    """Every anchor of every configured store. Raises AnchorError when a store cannot be read, BadAnchor
    for an object that is not an anchor."""
    found: list[tuple[str, bytes]] = []
    if settings.AUDIT_ANCHOR_DIR:
        found += _dir_read(Path(settings.AUDIT_ANCHOR_DIR))
    if settings.AUDIT_ANCHOR_BUCKET:
        found += _s3_read(settings.AUDIT_ANCHOR_BUCKET, settings.AUDIT_ANCHOR_PREFIX)
    return [_parse(location, body) for location, body in found]


def _parse(location: str, body: bytes) -> Anchor:
    try:
        doc = json.loads(body)
        anchor = Anchor(**{name: doc[name] for name in FIELDS}, location=location)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadAnchor(location) from exc
    if type(anchor.sequence_num) is not int or not all(
            isinstance(getattr(anchor, name), str) for name in FIELDS[1:]):
        raise BadAnchor(location)
    return anchor


# --- a directory ---------------------------------------------------------------------------------

def _dir_write(directory: Path, name: str, body: bytes) -> str:
    path = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # never overwrites an anchor
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AnchorError(f"cannot write the anchor {path}: {exc}") from exc
    return str(path)


def _dir_read(directory: Path) -> list[tuple[str, bytes]]:
    try:
        paths = sorted(directory.glob("*.json"))
        return [(str(path), path.read_bytes()) for path in paths]
    except OSError as exc:
        raise AnchorError(f"cannot read the anchors in {directory}: {exc}") from exc


# --- an S3 bucket ------------------------------------------------------------------------------

def _client():
    return boto3.client(
        "s3",
        endpoint_url=settings.AWS_ENDPOINT_URL or None,
        region_name=settings.AWS_REGION,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=30,
                      retries={"max_attempts": 3, "mode": "standard"}),
    )


def _lock_retention(s3, bucket: str) -> dict:
    """put_object's retention arguments: COMPLIANCE for AUDIT_ANCHOR_RETENTION_DAYS when the bucket has
    Object Lock without a default rule; nothing when it has none or a rule of its own."""
    try:
        config = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration", {})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
            return {}
        raise
    if config.get("ObjectLockEnabled") != "Enabled" or config.get("Rule", {}).get("DefaultRetention"):
        return {}
    days = settings.AUDIT_ANCHOR_RETENTION_DAYS
    if days <= 0:
        return {}
    until = datetime.now().astimezone() + timedelta(days=days)
    return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}


def _s3_write(bucket: str, key: str, body: bytes) -> str:
    s3 = _client()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                      **_lock_retention(s3, bucket))
    except (BotoCoreError, ClientError) as exc:
        raise AnchorError(f"cannot write the anchor s3://{bucket}/{key}: {exc}") from exc
    return f"s3://{bucket}/{key}"


def _s3_read(bucket: str, prefix: str) -> list[tuple[str, bytes]]:
    s3 = _client()
    try:
        keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", []) if item["Key"].endswith(".json")]
        with ThreadPoolExecutor(S3_READERS) as pool:
            bodies = list(pool.map(lambda key: s3.get_object(Bucket=bucket, Key=key)["Body"].read(), keys))
    except (BotoCoreError, ClientError) as exc:
        raise AnchorError(f"cannot read the anchors in s3://{bucket}/{prefix}: {exc}") from exc
    return [(f"s3://{bucket}/{key}", body) for key, body in zip(keys, bodies)]
