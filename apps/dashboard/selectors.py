"""Reads of the overview page: counts and short lists, each one query whatever the number of rows."""

from django.db.models import Count, Prefetch, Q
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.lablets.lifecycle import LIVE
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.selectors import lablet_instance_visible_to
from apps.workers import ledger
from apps.workers.models import Worker, WorkerStatus
from apps.workers.selectors import percent
from apps.api.permissions import privileged

SHORT_LIST = 10
WORKER_CARDS = 50  # the overview shows this many workers; the fleet page shows them all


def status_counts(queryset, choices) -> list[tuple[str, int]]:
    """(status, count) for every choice, zeros included, from one grouped query."""
    counts = dict(queryset.order_by().values_list("status").annotate(n=Count("pk")))
    return [(value, counts.get(value, 0)) for value in choices.values]


def worker_load_list(queryset=None):
    """Workers (not terminated), in the cards' order; worker_cards adds what they hold. One query."""
    workers = (queryset if queryset is not None else Worker.objects.exclude(status=WorkerStatus.TERMINATED))
    return workers.select_related("template").order_by("name", "pk")


INSTANCES_PER_CARD = 20


def worker_cards(*, limit: int | None = None, with_instances: bool = False) -> list[Worker]:
    """worker_load_list with what each worker is committed to from now on, from the capacity ledger
    (apps.workers.ledger.commitments: lablet instances, session labs and warm labs at their busiest moment
    ahead): `held_cpu`, `held_memory`, `held_nodes`, the bars' percentages (`cpu_held_percent`, ...), and the
    counts `live_instances`, `session_labs`, `warm_labs`; with `with_instances` its first live instances as
    `live_instance_list` (one more query for all workers). One round of the ledger for all the cards."""
    workers = worker_load_list()
    if with_instances:
        live = LabletInstance.objects.filter(status__in=LIVE).only(
            "public_id", "owner_id", "status", "worker_id").order_by("timeslot_start", "pk")
        workers = workers.prefetch_related(
            Prefetch("instances", queryset=live[:INSTANCES_PER_CARD], to_attr="live_instance_list"))
    workers = list(workers[:limit])
    held = ledger.commitments([worker.pk for worker in workers], timezone.now())
    for worker in workers:
        entry = held.get(worker.pk)
        peak = entry["peak"] if entry else (0,) * len(ledger.DIMENSIONS)
        worker.held_cpu, worker.held_memory, worker.held_nodes = peak[0], peak[1], peak[3]
        worker.live_instances = entry[ledger.INSTANCE] if entry else 0
        worker.session_labs = entry[ledger.SESSION_LAB] if entry else 0
        worker.warm_labs = entry[ledger.WARM_LAB] if entry else 0
        worker.cpu_held_percent = percent(worker.held_cpu, worker.cpu_cores)
        worker.memory_held_percent = percent(worker.held_memory, worker.memory_gb)
        worker.nodes_held_percent = percent(worker.held_nodes, worker.max_nodes)
    return workers


def overview(*, user) -> dict:
    instances = lablet_instance_visible_to(user=user)
    now = timezone.now()
    workers = worker_cards(limit=WORKER_CARDS)
    events = AuditEvent.objects.filter(sequence_num__isnull=False).order_by("-sequence_num")
    if not privileged(user):  # instructors: the events of their own instances (as on the live stream)
        events = events.filter(resource_type="lablet_instance",
                               resource_id__in=instances.values("public_id"))
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
        "failed_deliveries": list(
            WebhookDelivery.objects.filter(status=DeliveryStatus.FAILED).select_related("subscription")
            .order_by("-created_at")[:SHORT_LIST]
        ) if privileged(user) else [],
    }
