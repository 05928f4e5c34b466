"""Webhook delivery transitions: pure data. Performed only by apps.webhooks.delivery.webhook_delivery_transition.

A delivery's record is its delivery log (WebhookDeliveryAttempt, one row per HTTP attempt, written in the
transaction of the attempt's outcome), not the audit journal: journalling deliveries would hand the
webhooks their own events to deliver.
"""

from apps.webhooks.models import DeliveryStatus as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.SENDING, S.SKIPPED}),
    # SENDING → SENDING: an attempt whose lease ran out (its process died) is claimed again.
    S.SENDING: frozenset({S.SENDING, S.PENDING, S.SUCCEEDED, S.FAILED, S.SKIPPED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.SKIPPED: frozenset(),
}

OPEN = frozenset({S.PENDING, S.SENDING})  # still to be delivered
FINISHED = frozenset({S.SUCCEEDED, S.FAILED, S.SKIPPED})


def sources_of(target: str) -> frozenset[str]:
    """The states from which `target` may be reached."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)
