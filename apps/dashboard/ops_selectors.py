"""Reads of the sessions page and the webhooks page: a fixed number of queries whatever the number of
sessions, subscriptions or delivery attempts (bounded lists, select_related, one grouped count)."""

from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber

from apps.webhooks.models import WebhookDeliveryAttempt, WebhookSubscription
from apps.sessions.lifecycle import LIVE
from apps.sessions.models import LabStatus, Session, SessionPool, SessionStatus
from apps.sessions.selectors import session_estimated_wait, session_lab_is_its, with_positions
from apps.api.permissions import privileged

WAITING_SHOWN = 100  # per pool: the head of the queue
ACTIVE_SHOWN = 100  # per pool
SUBSCRIPTIONS_SHOWN = 100
ATTEMPTS_SHOWN = 50


def _first_per_pool(queryset, *, order_by: str, limit: int) -> list[Session]:
    """The first `limit` sessions of each pool in `order_by` order: one query (a window over the pool)."""
    ranked = queryset.annotate(rank=Window(RowNumber(), partition_by=[F("pool_id")], order_by=F(order_by).asc()))
    return list(ranked.filter(rank__lte=limit).order_by("pool_id", order_by))


def wait_text(seconds: int | None) -> str:
    """An estimated wait for people: None until a session of the pool has finished (no average yet)."""
    if seconds is None:
        return "unknown yet"
    if seconds < 60:
        return "under a minute"
    return f"about {round(seconds / 60)} min"


def _device_name(device) -> str:
    return str(device.get("name", "?")) if isinstance(device, dict) else str(device)


def sessions_page(*, user) -> dict:
    """Per pool: the waiting queue in order (position, estimated wait) and the active sessions with their
    worker and their lab (the worker's lab when it is the session's principal's, `session_lab_is_its`).
    Staff see every session; anyone else only the sessions they own."""
    visible = Session.objects.all() if privileged(user) else Session.objects.filter(owner_id=user.pk)
    live = visible.filter(status__in=LIVE)
    counts = {(row["pool_id"], row["status"]): row["n"]
              for row in live.order_by().values("pool_id", "status").annotate(n=Count("pk"))}
    waiting = _first_per_pool(with_positions(live.filter(status=SessionStatus.WAITING).select_related("pool", "owner")),
                              order_by="ticket", limit=WAITING_SHOWN)
    active = _first_per_pool(live.filter(status=SessionStatus.ACTIVE)
                             .select_related("pool", "owner", "worker", "worker__session_lab"),
                             order_by="activated_at", limit=ACTIVE_SHOWN)
    pools = {pool.pk: {"pool": pool, "waiting": [], "active": [],
                       "waiting_count": counts.get((pool.pk, SessionStatus.WAITING), 0),
                       "active_count": counts.get((pool.pk, SessionStatus.ACTIVE), 0)}
             for pool in SessionPool.objects.all()}
    for session in waiting:
        wait = session_estimated_wait(session)
        pools[session.pool_id]["waiting"].append({"session": session, "wait": wait, "wait_text": wait_text(wait)})
    everyone = privileged(user)
    for session in active:
        # The lab shown for a session is the one the session itself may see (a lab outlives its session, for
        # its principal's next one only); staff, who see every lab, are also told of another's lab there.
        slot = getattr(session.worker, "session_lab", None) if session.worker_id else None
        lab = slot if session_lab_is_its(session=session, lab=slot) else None
        other_lab = slot if everyone and lab is None and slot is not None and slot.status != LabStatus.EMPTY else None
        devices = [_device_name(device) for device in (lab.devices or [])] if lab is not None else []
        pools[session.pool_id]["active"].append({"session": session, "lab": lab, "other_lab": other_lab,
                                                 "devices": devices})
    return {"pools": list(pools.values()), "everyone": everyone,
            "waiting_shown": WAITING_SHOWN, "active_shown": ACTIVE_SHOWN}


def webhooks_page() -> dict:
    """The subscriptions (oldest first) and the latest delivery attempts with their subscription."""
    return {
        "subscriptions": list(WebhookSubscription.objects.order_by("created_at", "pk")[:SUBSCRIPTIONS_SHOWN]),
        "subscription_total": WebhookSubscription.objects.count(),
        "attempts": list(WebhookDeliveryAttempt.objects.select_related("subscription")
                         .order_by("-delivered_at", "-pk")[:ATTEMPTS_SHOWN]),
        "attempts_shown": ATTEMPTS_SHOWN,
    }
