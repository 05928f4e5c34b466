"""Idempotency-Key on creating POSTs: a retry with the same key and body gets the first response;
the same key with another body is 422.

Two phases, so that no database transaction stays open while the create calls EC2 or CML: the key's
row is committed first (the unique index makes exactly one request the owner), the create runs, and
its response is stored on the row. A concurrent twin finds the row, waits until the owner stores its
answer and replays it (409 if it takes longer than IDEMPOTENCY_WAIT_SECONDS). A create that fails
removes the row, so the request can be retried with the same key."""

import hashlib
import json
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from apps.core.errors import Conflict, ValidationFailed
from apps.api.models import IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


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


def honours_idempotency_key(view_method) -> bool:
    """Whether a view's handler (a viewset's `create`, an APIView's `post`) goes through `idempotent` below:
    the OpenAPI document declares the Idempotency-Key header on exactly those operations (apps/api/schema.py)."""
    code = getattr(getattr(view_method, "__func__", view_method), "__code__", None)
    return code is not None and idempotent.__name__ in code.co_names


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
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    while True:
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    user=request.user, key=key, method=request.method, path=request.path, fingerprint=fingerprint
                )
            break  # this request owns the key
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
            if existing is None:
                continue  # the owner failed and let go of the key: try to own it
            if existing.fingerprint != fingerprint or existing.status_code:
                return _replay(existing, fingerprint)
            if time.monotonic() > deadline:
                raise Conflict(f"A request with Idempotency-Key '{key}' is still in progress; retry later.")
            time.sleep(0.05)
    try:
        response = handler()
    except BaseException:
        record.delete()
        raise
    if response.status_code >= 500:
        record.delete()
        return response
    record.status_code = response.status_code
    record.response_body = json.loads(json.dumps(response.data, default=str))
    record.save(update_fields=["status_code", "response_body"])
    return response
