"""The lablet instance lifecycle engine (docs/lifecycle.md): brings labs up before their slot, tears them
down (stop, archive to S3, delete) at the end, retries what fails, and reconciles with CML after a crash.

Entry points: `lifecycle_tick` and `instance_advance` (django-q2 tasks in apps.lablets.tasks),
`instance_terminate` and `instance_collect` (behind the services in apps.lablets.services.instances).
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance

from . import instantiate, teardown
from .collection import collect as instance_collect
from .common import claim, load, schedule_pending
from .ending import request_end
from .tick import FREEING_OUTCOMES, lifecycle_tick

__all__ = ["instance_advance", "instance_collect", "instance_terminate", "lifecycle_tick"]


def instance_advance(*, instance_pk: int, actor: str = "system", now: datetime | None = None) -> str:
    """Whatever step is due for one instance now (the `advance_instance` task)."""
    now = now or timezone.now()
    status = load(instance_pk).status
    if status == S.SCHEDULED:
        return instantiate.begin(instance_pk, now=now, actor=actor)
    if status == S.INSTANTIATING:
        step = claim(instance_pk, status=status, now=now, actor=actor)
        return "busy" if step is None else instantiate.advance(step)
    if status in TEARDOWN:
        outcomes = teardown.teardown(instance_pk, now=now, actor=actor)
        if any(o in FREEING_OUTCOMES for o in outcomes):
            schedule_pending(actor)
        return outcomes[-1] if outcomes else "busy"
    if status == S.TERMINATED:
        return teardown.cleanup(instance_pk, now=now, actor=actor)
    return "nothing_due"


def instance_terminate(*, instance: LabletInstance, actor: str, reason: str = "terminate requested",
                       now: datetime | None = None) -> LabletInstance:
    """End an instance from any state, now: without a lab straight to TERMINATED; with one through the
    teardown, run here and now as far as it goes (a step CML refuses, or that another process is in the
    middle of, is finished by the tick). InvalidTransition (409) when it is already terminated."""
    now = now or timezone.now()
    instance, reached = request_end(instance.pk, reason=reason, actor=actor, now=now)
    freed = reached == S.TERMINATED
    if instance.status in TEARDOWN:
        outcomes = teardown.teardown(instance.pk, now=now, actor=actor, force_due=True)
        freed = freed or any(o in FREEING_OUTCOMES for o in outcomes)
    if freed:
        schedule_pending(actor)
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=instance.pk)
