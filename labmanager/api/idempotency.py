"""Idempotency-Key on creating POSTs: a retry with the same key and body gets the first response;
the same key with another body is 422. Safe under concurrent retries: the record row is inserted
first in the request's transaction, so a concurrent twin blocks on the unique index until the
first commits and then replays it (PostgreSQL), or is serialised by SQLite's write lock."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from labmanager.errors import ValidationFailed
from labmanager.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class _KeyTaken(Exception):
    pass


class _NotStored(Exception):
    def __init__(self, response):
        self.response = response


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.path.encode() + b"\0")
    try:
        body = json.dumps(request.data, sort_keys=True, default=str).encode()
    except Exception:
        body = request.body
    digest.update(body)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise ValidationFailed(
            f"Idempotency-Key '{record.key}' was already used with a different request body.",
            errors={HEADER: ["Reused with a different request."]},
        )
    response = Response(record.response_body, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(handler, request) -> Response:
    """Run `handler()` (which performs the create) at most once per (user, Idempotency-Key)."""
    key = request.headers.get(HEADER, "").strip()
    if not key:
        return handler()
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters.", errors={HEADER: ["Too long."]})
    fingerprint = _fingerprint(request)
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    IdempotencyRecord.objects.filter(user=request.user, key=key, created_at__lt=cutoff).delete()
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        user=request.user, key=key, method=request.method, path=request.path, fingerprint=fingerprint
                    )
            except IntegrityError:
                raise _KeyTaken
            response = handler()
            if response.status_code >= 500:
                raise _NotStored(response)
            record.status_code = response.status_code
            record.response_body = json.loads(json.dumps(response.data, default=str))
            record.save(update_fields=["status_code", "response_body"])
            return response
    except _NotStored as exc:
        return exc.response
    except _KeyTaken:
        record = IdempotencyRecord.objects.get(user=request.user, key=key)
        return _replay(record, fingerprint)
