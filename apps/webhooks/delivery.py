"""One delivery attempt: claim, sign, POST (to the address the SSRF check approved), log, decide.

    X-Lablet-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Lablet-Timestamp>.<body>")>

No database transaction is open during the HTTP call (STYLE.md principle 4).
"""

import hashlib
import hmac
import logging
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.webhooks.lifecycle import TRANSITIONS, sources_of
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt, WebhookSubscription
from apps.webhooks.ssrf import UnsafeWebhookUrl, check_url

log = logging.getLogger(__name__)
EXCERPT_BYTES = 500
MAX_BACKOFF_SECONDS = 3600
USER_AGENT = "LabManager-Webhooks/1.0"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff_seconds(attempt: int, retry_after: str | None = None) -> int:
    """Exponential: base, 2×base, 4×base, ... after attempt 1, 2, 3 (a longer Retry-After wins), capped."""
    seconds = settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1)
    if retry_after and retry_after.strip().isdigit():
        seconds = max(seconds, int(retry_after))
    return min(seconds, MAX_BACKOFF_SECONDS)


def webhook_delivery_transition(*, deliveries, to: str, **fields) -> int:
    """The one writer of a delivery's status (tests/test_status_writes.py): moves those of `deliveries` that
    may reach `to` (apps/webhooks/lifecycle.py) with one UPDATE, writing `fields` too (the lease and the
    attempt count ride on the status); returns the count. A row that moved on meanwhile is not counted."""
    if to not in TRANSITIONS:
        raise ValueError(f"unknown delivery status {to!r}")
    return deliveries.filter(status__in=sources_of(to)).update(status=to, **fields)


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Compare-and-swap: the one attempt that moves the row to SENDING (with a lease) makes the call."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    due = WebhookDelivery.objects.filter(
        pk=delivery_id, status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING], next_attempt_at__lte=now,
        subscription__active=True,
    )
    claimed = webhook_delivery_transition(deliveries=due, to=DeliveryStatus.SENDING, attempts=F("attempts") + 1,
                                  next_attempt_at=lease)
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)


def _post(sub: WebhookSubscription, delivery: WebhookDelivery) -> dict:
    """Make the HTTP call. Returns status_code, excerpt, error, retryable, retry_after, duration_ms."""
    body = delivery.payload.encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/cloudevents+json",
        "User-Agent": USER_AGENT,
        "X-Lablet-Event-Id": delivery.event_id,
        "X-Lablet-Event-Type": delivery.event_type,
        "X-Lablet-Timestamp": timestamp,
        "X-Lablet-Signature": sign(sub.secret, timestamp, body),
        "X-Lablet-Delivery-Attempt": str(delivery.attempts),
    }
    started = time.monotonic()
    out = {"status_code": None, "excerpt": "", "error": "", "retryable": False, "retry_after": None}
    try:
        target = check_url(sub.url)
    except UnsafeWebhookUrl as exc:
        # DNS failures may pass; an address that became private or metadata is a refusal.
        out.update(error=str(exc)[:500], retryable="does not resolve" in str(exc))
        out["duration_ms"] = int((time.monotonic() - started) * 1000)
        return out
    url = httpx.URL(sub.url)
    host_header = url.netloc.decode().rpartition("@")[2]
    pinned = url.copy_with(host=target.address)  # connect to the checked address: no second DNS lookup
    headers["Host"] = host_header
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", pinned, content=body, headers=headers, extensions=extensions) as response:
                chunk = b""
                for part in response.iter_bytes():
                    chunk += part
                    if len(chunk) >= EXCERPT_BYTES:
                        break
                code = response.status_code
                out.update(status_code=code, excerpt=chunk[:EXCERPT_BYTES].decode(errors="replace"),
                           retry_after=response.headers.get("Retry-After"))
                if not 200 <= code < 300:
                    out["error"] = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
                    out["retryable"] = code >= 500 or code == 429
    except httpx.HTTPError as exc:
        out.update(error=f"{type(exc).__name__}: {exc}"[:500], retryable=True)
    out["duration_ms"] = int((time.monotonic() - started) * 1000)
    return out


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """Run one attempt of a delivery if it is due; returns what happened (for the task's result)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "not due"
    sub = delivery.subscription
    result = _post(sub, delivery)
    return _record(delivery, result)


def _record(delivery: WebhookDelivery, result: dict) -> str:
    from apps.webhooks.services import webhook_subscription_disable

    now = timezone.now()
    succeeded = result["status_code"] is not None and not result["error"]
    will_retry = not succeeded and result["retryable"] and delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS
    next_at = now + timedelta(seconds=backoff_seconds(delivery.attempts, result["retry_after"])) if will_retry else None
    with transaction.atomic():
        sub = WebhookSubscription.objects.select_for_update().get(pk=delivery.subscription_id)
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery, subscription=sub, event_id=delivery.event_id, event_type=delivery.event_type,
            attempt=delivery.attempts, success=succeeded, status_code=result["status_code"],
            response_excerpt=result["excerpt"][:500], error=result["error"][:500], duration_ms=result["duration_ms"],
            delivered_at=now, next_attempt_at=next_at,
        )
        sending = WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING)
        if succeeded:
            webhook_delivery_transition(deliveries=sending, to=DeliveryStatus.SUCCEEDED, finished_at=now)
            sub.consecutive_failures, sub.last_success_at = 0, now
            sub.total_deliveries += 1
            sub.save(update_fields=["consecutive_failures", "last_success_at", "total_deliveries", "updated_at"])
            return "delivered"
        if will_retry:
            webhook_delivery_transition(deliveries=sending, to=DeliveryStatus.PENDING, next_attempt_at=next_at)
            return f"retry at {next_at.isoformat()}"
        webhook_delivery_transition(deliveries=sending, to=DeliveryStatus.FAILED, finished_at=now)
        sub.consecutive_failures += 1
        sub.total_failures += 1
        sub.last_failure_at = now
        sub.save(update_fields=["consecutive_failures", "total_failures", "last_failure_at", "updated_at"])
        if sub.active and sub.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES > 0:
            webhook_subscription_disable(
                subscription_id=sub.pk,
                reason=f"{sub.consecutive_failures} consecutive failed deliveries; last: {result['error']}",
            )
            return "failed; subscription disabled"
        return "failed"
