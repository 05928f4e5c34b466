"""django-q2 entry points of the shared plumbing."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.api.models import IdempotencyRecord


def purge_idempotency_keys() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
