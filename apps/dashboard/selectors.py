"""Reads of the overview page: counts and short lists, each one query whatever the number of rows."""

from datetime import timedelta

from django.db.models import Count, Prefetch, Q, Sum
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.fleet.models import OrphanLab
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.lablets.lifecycle import LIVE
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.selectors import lablet_instance_visible_to
from apps.workers.models import Worker, WorkerStatus
from apps.workers.selectors import percent
from apps.api.permissions import privileged

SHORT_LIST = 10
LOST_SHOWN_HOURS = 24  # "Needs attention" lists instances that lost their lab this recently
WORKER_CARDS = 50  # the overview shows this many workers; the fleet page shows them all


def status_counts(queryset, choices) -> list[tuple[str, int]]:
    """(status, count) for every choice, zeros included, from one grouped query."""
    counts = dict(queryset.order_by().values_list("status").annotate(n=Count("pk")))
    return [(value, counts.get(value, 0)) for value in choices.values]


def worker_load_list(queryset=None):
    """Workers (not terminated) with what their live instances hold: `held_cpu`, `held_memory`, `held_nodes`,
    `live_instances`, and percentages for the bars. One query."""
    live = Q(instances__status__in=LIVE)
    workers = (queryset if queryset is not None else Worker.objects.exclude(status=WorkerStatus.TERMINATED))
    workers = workers.select_related("template").annotate(
        held_cpu=Sum("instances__cpu_cores", filter=live, default=0),
        held_memory=Sum("instances__memory_gb", filter=live, default=0),
        held_nodes=Sum("instances__node_count", filter=live, default=0),
        live_instances=Count("instances", filter=live),
    ).order_by("name", "pk")
    return workers


INSTANCES_PER_CARD = 20


def worker_cards(*, limit: int | None = None, with_instances: bool = False) -> list[Worker]:
    """worker_load_list with the bars' percentages (`cpu_held_percent`, ...) set on each worker, and with
    `with_instances` its first live instances as `live_instance_list` (one more query for all workers)."""
    workers = worker_load_list()
    if with_instances:
        live = LabletInstance.objects.filter(status__in=LIVE).only(
            "public_id", "owner_id", "status", "worker_id").order_by("timeslot_start", "pk")
        workers = workers.prefetch_related(
            Prefetch("instances", queryset=live[:INSTANCES_PER_CARD], to_attr="live_instance_list"))
    workers = list(workers[:limit])
    for worker in workers:
        worker.cpu_held_percent = percent(worker.held_cpu, worker.cpu_cores)
        worker.memory_held_percent = percent(worker.held_memory, worker.memory_gb)
        worker.nodes_held_percent = percent(worker.held_nodes, worker.max_nodes)
    return workers


def overview(*, user) -> dict:
    instances = lablet_instance_visible_to(user=user)
    now = timezone.now()
    workers = worker_cards(limit=WORKER_CARDS)
    events = AuditEvent.objects.filter(sequence_num__isnull=False).order_by("-sequence_num")
    lost = AuditEvent.objects.filter(event_type="lablet_instance.lost",
                                     timestamp__gte=now - timedelta(hours=LOST_SHOWN_HOURS))
    if not privileged(user):  # instructors: the events of their own instances (as on the live stream)
        events = events.filter(resource_type="lablet_instance",
                               resource_id__in=instances.values("public_id"))
        lost = lost.filter(resource_id__in=instances.values("public_id"))
    return {
        "instance_counts": status_counts(instances, InstanceStatus),
        "worker_counts": status_counts(Worker.objects.all(), WorkerStatus),
        "workers": workers,
        "next_timeslots": list(
            instances.filter(status__in=[InstanceStatus.PENDING, InstanceStatus.SCHEDULED], timeslot_end__gt=now)
            .order_by("timeslot_start")[:SHORT_LIST]
        ),
        "recent_events": list(events[:SHORT_LIST]),
        "failed_instances": list(
            instances.filter(status__in=LIVE).exclude(last_error="").order_by("-updated_at")[:SHORT_LIST]
        ),
        "unhealthy_workers": list(
            Worker.objects.filter(
                Q(status=WorkerStatus.FAILED)
                | (Q(status=WorkerStatus.RUNNING) & ~Q(cml_service_status="available"))
            ).order_by("name")[:SHORT_LIST]
        ),
        # Lost their lab behind LabManager's back (apps.fleet.reconcile): the journal's lablet_instance.lost rows.
        "lost_instances": list(lost.order_by("-id")[:SHORT_LIST]),
        "orphan_labs": list(
            OrphanLab.objects.filter(removed_at__isnull=True).select_related("worker")
            .order_by("first_seen_at", "pk")[:SHORT_LIST]
        ) if privileged(user) else [],
        "failed_deliveries": list(
            WebhookDelivery.objects.filter(status=DeliveryStatus.FAILED).select_related("subscription")
            .order_by("-created_at")[:SHORT_LIST]
        ) if privileged(user) else [],
    }
