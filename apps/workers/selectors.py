"""Reads of workers."""

from django.db.models import QuerySet

from apps.workers.models import Worker


def worker_list(*, filters: dict | None = None) -> QuerySet[Worker]:
    filters = filters or {}
    qs = Worker.objects.all()
    if filters.get("status"):
        qs = qs.filter(status__in=filters["status"])
    elif not filters.get("include_terminated"):
        qs = qs.exclude(status="terminated")
    return qs


def worker_get(*, public_id: str) -> Worker:
    return Worker.objects.get(public_id=public_id)
