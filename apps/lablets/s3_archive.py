"""The instance archive on S3 (moto's S3 under `make run` and in tests): a thin boto3 gateway, no ORM.

One folder per instance: `<ARCHIVE_S3_PREFIX><instance public id>/` holding `lab.yaml` (the lab as CML
exported it), `artifacts.json` (the collection artifacts), `configs/<node label>.txt` (each collected
node configuration) and `instance.json` (what the instance was: definition, owner, timeslot, worker,
grading result, termination reason). The bucket is created on first use.
"""

from __future__ import annotations

import json

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings


class ArchiveError(Exception):
    """Writing to the archive failed (S3 unreachable, refused, ...)."""


def _client():
    return boto3.client(
        "s3",
        endpoint_url=settings.AWS_ENDPOINT_URL or None,
        region_name=settings.AWS_REGION,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def _create_bucket(s3, bucket: str) -> None:
    kwargs = {"Bucket": bucket}
    if settings.AWS_REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.AWS_REGION}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def archive_prefix(public_id: str) -> str:
    """The key prefix (folder) of an instance's archive."""
    return f"{settings.ARCHIVE_S3_PREFIX}{public_id}/"


def archive_files(*, instance_snapshot: dict, lab_yaml: str | None, artifacts: list) -> dict[str, bytes]:
    """The files of an archive, by name under the instance's folder."""
    files = {"instance.json": json.dumps(instance_snapshot, indent=2, sort_keys=True).encode()}
    if lab_yaml is not None:
        files["lab.yaml"] = lab_yaml.encode()
    files["artifacts.json"] = json.dumps(artifacts, indent=2).encode()
    for artifact in artifacts:
        if isinstance(artifact, dict) and artifact.get("kind") == "node_config":
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(artifact.get("node", "node")))
            files[f"configs/{name}.txt"] = str(artifact.get("content") or "").encode()
    return files


def archive_put(*, public_id: str, files: dict[str, bytes]) -> str:
    """Write the files under the instance's folder (overwriting: a retried archive is the same archive);
    returns the folder's key prefix. Raises ArchiveError."""
    bucket = settings.ARCHIVE_S3_BUCKET
    prefix = archive_prefix(public_id)
    s3 = _client()
    try:
        for name, body in files.items():
            content_type = "application/json" if name.endswith(".json") else "text/plain"
            if name.endswith(".yaml"):
                content_type = "application/x-yaml"
            try:
                s3.put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType=content_type)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                    raise
                _create_bucket(s3, bucket)
                s3.put_object(Bucket=bucket, Key=prefix + name, Body=body, ContentType=content_type)
    except (BotoCoreError, ClientError) as exc:
        raise ArchiveError(f"S3 bucket {bucket}: cannot write {prefix}: {exc}") from exc
    return prefix
