"""Reads of workers."""

from django.db.models import QuerySet

from apps.workers.models import Worker, WorkerStatus, WorkerTemplate


def worker_list(*, filters: dict | None = None) -> QuerySet[Worker]:
    filters = filters or {}
    qs = Worker.objects.select_related("template")
    if filters.get("status"):
        qs = qs.filter(status__in=filters["status"])
    elif not filters.get("include_terminated"):
        qs = qs.exclude(status=WorkerStatus.TERMINATED)
    if filters.get("draining") is not None:
        qs = qs.filter(draining=filters["draining"])
    return qs


def worker_placeable_list() -> QuerySet[Worker]:
    """Workers that take new placements: running, not draining, CML available (see Worker.is_placeable)."""
    return Worker.objects.filter(status=WorkerStatus.RUNNING, draining=False, cml_service_status="available")


def worker_template_list() -> QuerySet[WorkerTemplate]:
    return WorkerTemplate.objects.all()


def percent(part, whole) -> int:
    """`part` of `whole` in whole percent, capped at 100 (0 without a whole): the fleet's bars."""
    return min(100, round(100 * (part or 0) / whole)) if whole else 0
