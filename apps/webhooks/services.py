"""Webhook subscriptions and the dispatch of journal events to them (docs/webhooks.md).

Dispatch is cursor-based, so nothing is lost and nothing is enqueued twice:

- every subscription has a cursor (`last_sequence_num`) in the audit chain;
- `webhooks_pump(up_to=N)` locks a subscription, turns the sealed events after its cursor (up to N) that
  match its filter into WebhookDelivery rows (unique per subscription and event) and moves the cursor, in
  one transaction; after commit each new delivery becomes one django-q2 task (tasks.webhook_deliver);
- `webhooks_dispatch_events(events)` is the fast path, called after the audit seal with the events just
  sealed; the `webhooks_catch_up` schedule (every minute) is the safety net: it pumps up to the chain head
  and re-enqueues deliveries that are due (retries) or whose task was lost.
"""

import logging
import secrets

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.webhooks.events import EVENT_FIELDS, TYPE_PATTERN, cloudevent_body, cloudevent_type, matches
from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookSubscription
from apps.webhooks.ssrf import UnsafeWebhookUrl, check_url
from apps.core.errors import ValidationFailed

log = logging.getLogger(__name__)
DELIVER_TASK = "apps.webhooks.tasks.webhook_deliver"
PUMP_BATCH = 1000
REENQUEUE_BATCH = 1000
# A fresh delivery is left this long to the task enqueued after its commit before catch-up enqueues it again.
FRESH_GRACE_SECONDS = 60
MIN_SECRET_LENGTH = 16
EDITABLE = ("url", "description", "event_types", "active", "secret")


# --- subscriptions -------------------------------------------------------------

def webhook_secret_generate() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def webhook_url_validate(url: str) -> None:
    """422 (problem+json, errors.url) when the URL may not be called (docs/webhooks.md#ssrf-protection)."""
    try:
        check_url(url)
    except UnsafeWebhookUrl as exc:
        raise ValidationFailed(f"Webhook URL refused: {exc}", errors={"url": [str(exc)]}) from None


def _validate(*, url=None, event_types=None, secret=None) -> None:
    if url is not None:
        webhook_url_validate(url)
    if event_types is not None:
        bad = [t for t in event_types if not isinstance(t, str) or not TYPE_PATTERN.match(t)]
        if bad:
            raise ValidationFailed("Unknown event type pattern(s).", errors={
                "event_types": [f"{t!r} is not a CloudEvents type or pattern like io.lablet.instance.*" for t in bad]})
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise ValidationFailed("The secret is too short.",
                               errors={"secret": [f"Use at least {MIN_SECRET_LENGTH} characters."]})


def _chain_head_sequence() -> int:
    return AuditEvent.objects.aggregate(head=Max("sequence_num"))["head"] or 0


def _described(sub: WebhookSubscription) -> dict:
    """What the journal says of a subscription: the URL's host only, never its path or query (they often
    carry the receiver's token)."""
    return {"host": sub.host, "event_types": sub.event_types, "active": sub.active, "description": sub.description}


@transaction.atomic
def webhook_subscription_create(*, actor: str, url: str, event_types: list[str] | None = None, secret: str = "",
                                description: str = "", active: bool = True, created_by=None) -> WebhookSubscription:
    """A subscription receives the events sealed after its creation. `secret` defaults to a generated one."""
    event_types = list(event_types or [])
    _validate(url=url, event_types=event_types, secret=secret or None)
    sub = WebhookSubscription.objects.create(
        url=url, event_types=event_types, secret=secret or webhook_secret_generate(), description=description,
        active=active, created_by=created_by, last_sequence_num=_chain_head_sequence(),
    )
    audit_record(event_type="webhook.created", actor=actor, resource_type="webhook", resource_id=sub.public_id,
                 action="webhook.create", metadata={"after": _described(sub)})
    return sub


@transaction.atomic
def webhook_subscription_update(*, subscription: WebhookSubscription, actor: str, **changes) -> WebhookSubscription:
    """Change url / description / event_types / active / secret (rotation). Re-enabling clears the failure
    streak and moves the cursor to the chain head: events sealed while disabled are not delivered."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationFailed(f"Not editable: {', '.join(sorted(unknown))}.")
    sub = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    _validate(url=changes.get("url"), event_types=changes.get("event_types"), secret=changes.get("secret"))
    before, url_before = _described(sub), sub.url
    if changes.get("active") and not sub.active:
        sub.consecutive_failures = 0
        sub.disabled_at, sub.disabled_reason = None, ""
        sub.last_sequence_num = max(sub.last_sequence_num, _chain_head_sequence())
    elif changes.get("active") is False and sub.active:
        sub.disabled_at, sub.disabled_reason = timezone.now(), f"disabled by {actor}"
        _skip_pending(sub)
    for field, value in changes.items():
        setattr(sub, field, list(value) if field == "event_types" else value)
    sub.save()
    audit_record(event_type="webhook.updated", actor=actor, resource_type="webhook", resource_id=sub.public_id,
                 action="webhook.update",
                 metadata={"before": before, "after": _described(sub), "url_changed": sub.url != url_before,
                           "secret_rotated": "secret" in changes})
    return sub


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription, actor: str) -> None:
    """Deletes the subscription with its deliveries and their log."""
    public_id, described = subscription.public_id, _described(subscription)
    WebhookSubscription.objects.filter(pk=subscription.pk).delete()
    audit_record(event_type="webhook.deleted", actor=actor, resource_type="webhook", resource_id=public_id,
                 action="webhook.delete", metadata={"before": described})


def webhook_subscription_disable(*, subscription_id: int, reason: str, actor: str = "system") -> bool:
    """Disable (in the caller's transaction, which must hold the subscription's row lock); audited as
    `webhook.disabled`. False when it was already disabled."""
    sub = WebhookSubscription.objects.select_for_update().get(pk=subscription_id)
    if not sub.active:
        return False
    sub.active, sub.disabled_at, sub.disabled_reason = False, timezone.now(), reason[:300]
    sub.save(update_fields=["active", "disabled_at", "disabled_reason", "updated_at"])
    skipped = _skip_pending(sub)
    audit_record(event_type="webhook.disabled", actor=actor, resource_type="webhook", resource_id=sub.public_id,
                 action="webhook.disable", success=True,
                 metadata={"reason": reason, "consecutive_failures": sub.consecutive_failures,
                           "skipped_deliveries": skipped, "host": sub.host})
    return True


def _skip_pending(sub: WebhookSubscription) -> int:
    from apps.webhooks.delivery import webhook_delivery_transition

    pending = WebhookDelivery.objects.filter(subscription=sub, status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING])
    return webhook_delivery_transition(deliveries=pending, to=DeliveryStatus.SKIPPED, finished_at=timezone.now())


# --- dispatch --------------------------------------------------------------------

def webhooks_dispatch_events(events) -> int:
    """After commit (and seal) of journal events: hand them to the matching subscriptions. Never raises;
    what it misses the catch-up schedule delivers. Returns how many deliveries were enqueued."""
    try:
        sequences = [e.sequence_num for e in events if getattr(e, "sequence_num", None)]
        if not sequences:
            return 0
        up_to = max(sequences)
        if not WebhookSubscription.objects.filter(active=True, last_sequence_num__lt=up_to).exists():
            return 0
        return len(webhooks_pump(up_to=up_to))
    except Exception:
        log.warning("Webhook dispatch failed; the catch-up schedule will deliver", exc_info=True)
        return 0


def webhooks_pump(*, up_to: int | None = None) -> list[int]:
    """Move every active subscription's cursor up to `up_to` (default: the chain head), creating one
    delivery per matching event, and enqueue them after commit. Returns the new delivery ids."""
    if up_to is None:
        up_to = _chain_head_sequence()
    created: list[int] = []
    for sub_id in WebhookSubscription.objects.filter(active=True, last_sequence_num__lt=up_to).values_list("pk", flat=True):
        while True:
            new_ids, done = _pump_one(sub_id, up_to)
            created.extend(new_ids)
            if done:
                break
    return created


def _pump_one(sub_id: int, up_to: int) -> tuple[list[int], bool]:
    """One batch for one subscription: (new delivery ids, caught up)."""
    with transaction.atomic():
        sub = WebhookSubscription.objects.select_for_update().filter(pk=sub_id, active=True).first()
        if sub is None or sub.last_sequence_num >= up_to:
            return [], True
        cursor = sub.last_sequence_num
        rows = list(
            AuditEvent.objects.filter(sequence_num__gt=cursor, sequence_num__lte=up_to)
            .order_by("sequence_num").values(*EVENT_FIELDS)[:PUMP_BATCH]
        )
        deliveries = []
        for row in rows:
            if not row["success"] or not matches(sub.event_types, cloudevent_type(row["event_type"])):
                continue
            try:
                event_id, ce_type, body = cloudevent_body(row)
            except Exception:  # one malformed event must not block the subscription's cursor
                log.exception("Cannot build the CloudEvent of journal event #%s; skipped", row["sequence_num"])
                continue
            deliveries.append(WebhookDelivery(subscription=sub, sequence_num=row["sequence_num"], event_id=event_id,
                                              event_type=ce_type, payload=body.decode()))
        done = len(rows) < PUMP_BATCH
        new_cursor = up_to if done else rows[-1]["sequence_num"]
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        ids = list(WebhookDelivery.objects.filter(
            subscription=sub, sequence_num__gt=cursor, sequence_num__lte=new_cursor, status=DeliveryStatus.PENDING,
            attempts=0).values_list("pk", flat=True))
        WebhookSubscription.objects.filter(pk=sub.pk).update(last_sequence_num=new_cursor)
        transaction.on_commit(lambda: _enqueue(ids))
    return ids, done


def _enqueue(delivery_ids: list[int]) -> None:
    from django_q.tasks import async_task

    for pk in delivery_ids:
        try:
            async_task(DELIVER_TASK, pk, group="webhooks")
        except Exception:  # the broker is down: the catch-up re-enqueues it once it is due
            log.warning("Could not enqueue webhook delivery %s", pk, exc_info=True)


def webhooks_catch_up() -> dict:
    """The safety net (every minute): seal what is committed, pump to the chain head, and re-enqueue
    deliveries that are due: retries, tasks lost with a process, leases of attempts that died."""
    try:
        from apps.audit.services import audit_seal

        audit_seal()
    except Exception:  # sealing is the journal's business; deliver what is sealed
        log.warning("audit_seal failed during webhook catch-up", exc_info=True)
    created = webhooks_pump()
    now = timezone.now()
    fresh_before = now - timezone.timedelta(seconds=FRESH_GRACE_SECONDS)
    due = WebhookDelivery.objects.filter(subscription__active=True, next_attempt_at__lte=now).filter(
        # a retry whose time came / a fresh one whose own task should have run by now / an expired lease
        Q(status=DeliveryStatus.PENDING, attempts__gt=0)
        | Q(status=DeliveryStatus.PENDING, created_at__lte=fresh_before)
        | Q(status=DeliveryStatus.SENDING)
    ).exclude(pk__in=created).order_by("next_attempt_at").values_list("pk", flat=True)[:REENQUEUE_BATCH]
    due = list(due)
    _enqueue(due)
    return {"created": len(created), "reenqueued": len(due)}

