"""GET /metrics: Prometheus text format. django-prometheus's request/response/database metrics, plus
domain gauges computed at scrape time with a few COUNT queries (docs/webhooks.md#metrics).

Access: scrapes from METRICS_ALLOWED_NETWORKS (loopback by default) need nothing; any other client
needs an admin or operator API key (X-API-Key or Authorization: Bearer) or an admin/operator session.
"""

import logging

from django.db.models import Count, Max, Min
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from rest_framework import exceptions

from apps.api.permissions import METRICS, allows, anonymous_from_allowed_network

log = logging.getLogger(__name__)


def _workers():
    from apps.workers.models import Worker, WorkerStatus

    counts = dict(Worker.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    family = GaugeMetricFamily("labmanager_workers", "Workers by status", labels=["status"])
    for status in WorkerStatus.values:
        family.add_metric([status], counts.get(status, 0))
    yield family


def _instances():
    from apps.lablets.models import InstanceStatus, LabletInstance

    counts = dict(LabletInstance.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    family = GaugeMetricFamily("labmanager_lablet_instances", "Lablet instances by status", labels=["status"])
    for status in InstanceStatus.values:
        family.add_metric([status], counts.get(status, 0))
    yield family


def _session_queues():
    from apps.sessions.models import Session, SessionPool
    waiting = dict(
        Session.objects.filter(status="waiting").values_list("pool__name").annotate(n=Count("pk")).values_list("pool__name", "n")
    )
    family = GaugeMetricFamily("labmanager_session_queue_length", "Waiting sessions per pool", labels=["pool"])
    for name in SessionPool.objects.values_list("name", flat=True):
        family.add_metric([name], waiting.get(name, 0))
    yield family


def _webhooks():
    from apps.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt, WebhookSubscription

    failures = WebhookDeliveryAttempt.objects.filter(success=False).count()
    yield CounterMetricFamily("labmanager_webhook_delivery_failures", "Failed webhook delivery attempts (the delivery log)",
                              value=failures)
    by_state = dict(WebhookSubscription.objects.values_list("active").annotate(n=Count("pk")).values_list("active", "n"))
    subs = GaugeMetricFamily("labmanager_webhook_subscriptions", "Webhook subscriptions", labels=["state"])
    subs.add_metric(["active"], by_state.get(True, 0))
    subs.add_metric(["disabled"], by_state.get(False, 0))
    yield subs
    open_ = WebhookDelivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING])
    summary = open_.aggregate(n=Count("pk"), oldest=Min("created_at"))
    yield GaugeMetricFamily("labmanager_webhook_deliveries_pending", "Webhook deliveries not finished yet",
                            value=summary["n"])
    lag = (timezone.now() - summary["oldest"]).total_seconds() if summary["oldest"] else 0.0
    yield GaugeMetricFamily("labmanager_webhook_delivery_lag_seconds",
                            "Age of the oldest unfinished webhook delivery (0: none)", value=lag)


def _audit():
    from apps.audit.models import AuditEvent

    head = AuditEvent.objects.aggregate(head=Max("sequence_num"))["head"] or 0
    yield GaugeMetricFamily("labmanager_audit_chain_length", "Sealed events in the audit chain (last sequence_num)",
                            value=head)
    unsealed = AuditEvent.objects.filter(sequence_num__isnull=True).count()  # the partial index: normally 0
    yield GaugeMetricFamily("labmanager_audit_unsealed_events",
                            "Committed audit events not linked into the chain yet (normally 0)", value=unsealed)


# live_stats() key -> (metric, kind, help). Per process: each ASGI process reports its own clients.
LIVE_METRICS = {
    "sse_clients": ("labmanager_live_sse_clients", "gauge", "SSE clients connected to this process"),
    "websocket_clients": ("labmanager_live_websocket_clients", "gauge", "WebSocket clients connected to this process"),
    "last_delivery_lag_seconds": (
        "labmanager_live_event_delivery_lag_seconds", "gauge",
        "Event delivery lag: seconds from the last fanned-out event's journal timestamp to its fan-out here"),
    "last_sequence": ("labmanager_live_last_sequence", "gauge", "Last journal sequence_num this process's tail read"),
    "tail_queries": ("labmanager_live_tail_queries", "counter", "Journal tail queries run by this process"),
    "events_fanned_out": ("labmanager_live_events_fanned_out", "counter", "Journal events fanned out by this process"),
    "dropped_slow_subscribers": ("labmanager_live_dropped_slow_subscribers", "counter",
                                 "Live clients cut off for falling LIVE_QUEUE_MAX events behind"),
}


def _live():
    from apps.events import live_stats

    stats = live_stats()
    for key, (name, kind, help_text) in LIVE_METRICS.items():
        value = stats.get(key)
        if value is None:  # no event fanned out yet: no lag to report
            continue
        family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        yield family(name, help_text, value=value)


SECTIONS = (_workers, _instances, _session_queues, _webhooks, _audit, _live)


class DomainCollector:
    """Runs at every scrape; a section that fails (a table not migrated yet) is left out, not fatal."""

    def collect(self):
        for section in SECTIONS:
            try:
                yield from list(section())
            except Exception:
                log.warning("metrics section %s failed", section.__name__, exc_info=True)

    def describe(self):
        return []  # no description: the registry must not run collect() at registration


DOMAIN_REGISTRY = CollectorRegistry(auto_describe=False)
DOMAIN_REGISTRY.register(DomainCollector())


def _from_allowed_network(request) -> bool:
    return anonymous_from_allowed_network(METRICS, request.META.get("REMOTE_ADDR"))


def _denied(request) -> HttpResponse | None:
    if _from_allowed_network(request):
        return None
    from apps.identity.authentication import ApiKeyAuthentication

    user = request.user if getattr(request, "user", None) and request.user.is_authenticated else None
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        return HttpResponse(f"{exc.detail}\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if found:
        user = found[0]
    if user is None:
        return HttpResponse("Authentication required: an admin or operator API key.\n", status=401,
                            content_type="text/plain", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if not allows(METRICS, user=user):
        return HttpResponse("Admins and operators only.\n", status=403, content_type="text/plain")
    return None


@require_GET
def metrics_view(request):
    denied = _denied(request)
    if denied is not None:
        return denied
    body = generate_latest(REGISTRY) + generate_latest(DOMAIN_REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
