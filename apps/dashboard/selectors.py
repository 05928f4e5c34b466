"""Reads of the overview page and the fleet page: counts, short lists and a page of cards, each one query
whatever the number of rows."""

from collections import defaultdict
from datetime import timedelta

from django.core.paginator import Page, Paginator
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.fleet.models import OrphanLab
from apps.webhooks.models import DeliveryStatus, WebhookDelivery
from apps.lablets.lifecycle import LIVE
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.selectors import lablet_instance_visible_to
from apps.workers import ledger
from apps.workers.models import Worker, WorkerStatus
from apps.workers.selectors import percent
from apps.api.permissions import privileged

SHORT_LIST = 10
LOST_SHOWN_HOURS = 24  # "Needs attention" lists instances that lost their lab this recently
WORKER_CARDS = 50  # the overview shows this many workers; the fleet page pages them (FLEET_PAGE_SIZE)
FLEET_PAGE_SIZE = 24  # worker cards per page of the fleet page (2, 3 or 4 to a row)


def status_counts(queryset, choices) -> list[tuple[str, int]]:
    """(status, count) for every choice, zeros included, from one grouped query."""
    counts = dict(queryset.order_by().values_list("status").annotate(n=Count("pk")))
    return [(value, counts.get(value, 0)) for value in choices.values]


def worker_load_list(queryset=None):
    """Workers (not terminated), in the cards' order; worker_cards adds what they hold. One query."""
    workers = (queryset if queryset is not None else Worker.objects.exclude(status=WorkerStatus.TERMINATED))
    return workers.select_related("template").order_by("name", "pk")


INSTANCES_PER_CARD = 20


def _with_held(workers: list[Worker]) -> list[Worker]:
    """Set on each worker what it is committed to from now on, from the capacity ledger
    (apps.workers.ledger.commitments: lablet instances, session labs and warm labs at their busiest moment
    ahead): `held_cpu`, `held_memory`, `held_nodes`, the bars' percentages (`cpu_held_percent`, ...), and the
    counts `live_instances`, `held_session_labs`, `held_warm_labs`. One round of the ledger for all of them."""
    held = ledger.commitments([worker.pk for worker in workers], timezone.now())
    for worker in workers:
        entry = held.get(worker.pk)
        peak = entry["peak"] if entry else (0,) * len(ledger.DIMENSIONS)
        worker.held_cpu, worker.held_memory, worker.held_nodes = peak[0], peak[1], peak[3]
        worker.live_instances = entry[ledger.INSTANCE] if entry else 0
        worker.held_session_labs = entry[ledger.SESSION_LAB] if entry else 0
        worker.held_warm_labs = entry[ledger.WARM_LAB] if entry else 0
        worker.cpu_held_percent = percent(worker.held_cpu, worker.cpu_cores)
        worker.memory_held_percent = percent(worker.held_memory, worker.memory_gb)
        worker.nodes_held_percent = percent(worker.held_nodes, worker.max_nodes)
    return workers


def worker_cards(*, limit: int | None = None) -> list[Worker]:
    """worker_load_list with what each worker holds (_with_held) set on each."""
    return _with_held(list(worker_load_list()[:limit]))


def _with_live_instances(workers: list[Worker]) -> list[Worker]:
    """Set on each worker its first live instances (by timeslot) as `live_instance_list` (dicts: public_id,
    owner_id, status): one query (a window over each worker's instances), whatever the fleet."""
    live = LabletInstance.objects.filter(worker_id__in=[worker.pk for worker in workers], status__in=LIVE).order_by()
    first = live.annotate(rank=Window(RowNumber(), partition_by=[F("worker_id")],
                                      order_by=[F("timeslot_start").asc(), F("pk").asc()]))
    listed = defaultdict(list)
    for row in (first.filter(rank__lte=INSTANCES_PER_CARD).order_by("worker_id", "rank")
                .values("worker_id", "public_id", "owner_id", "status")):
        listed[row["worker_id"]].append(row)
    for worker in workers:
        worker.live_instance_list = listed[worker.pk]
    return workers


# The statuses the fleet page shows and filters by (terminated workers are gone from it).
FLEET_STATUSES = [value for value in WorkerStatus.values if value != WorkerStatus.TERMINATED]


def fleet_page(*, status: str = "", name: str = "", page=None, per_page: int | None = None) -> dict:
    """The fleet page: the number of workers per status (one grouped query, the summary) and one page of
    worker cards (their count, the page, what they hold from the capacity ledger, their live instances: a few
    queries whatever the fleet), filtered by `status` (one of FLEET_STATUSES; anything else is ignored) and by a
    part of the `name`."""
    fleet = Worker.objects.exclude(status=WorkerStatus.TERMINATED)
    counts = dict(fleet.order_by().values_list("status").annotate(n=Count("pk")))
    chosen = fleet
    status = status if status in FLEET_STATUSES else ""
    if status:
        chosen = chosen.filter(status=status)
    if name:
        chosen = chosen.filter(name__icontains=name)
    # Paged on the plain rows (the count needs no sums); the holdings and the instances only for the page's cards.
    page_obj: Page = Paginator(chosen.select_related("template").order_by("name", "pk"),
                               per_page or FLEET_PAGE_SIZE).get_page(page)
    workers = _with_held(_with_live_instances(list(page_obj.object_list)))
    return {
        "workers": workers, "page_obj": page_obj, "status": status, "name": name,
        "status_counts": [(value, counts.get(value, 0)) for value in FLEET_STATUSES],
        "fleet_total": sum(counts.values()),
    }


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
