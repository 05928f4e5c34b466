"""The lablet instance lifecycle engine (docs/lifecycle.md): brings labs up before their slot, tears them
down (stop, archive to S3, delete) at the end, retries what fails, and reconciles with CML after a crash.

It is the layer above apps.lablets.services that orchestrates them: it decides what is due, claims an
instance, calls CML (apps.workers.cml) and S3 (apps.lablets.s3_archive) with no transaction open, then
commits the outcome through the services: every status change through `lablet_instance_transition`; the
lease and its retries, console ports, placement and instantiation progress through services/lease.py,
ports.py, scheduling.py and instances.py; a step's results and their journal rows through services/steps.py.
It writes nothing itself (tests/test_status_writes.py). It may use the models, lifecycle.py, selectors and
services of apps.lablets, and the models, services and CML gateway of apps.workers; never views, api or
tasks. The services import it only to hand over the verbs below (services/instances.py,
services/awaited.py): the import-linter contract in pyproject.toml. See docs/lifecycle.md, "The engine and
the services".

Entry points: `lifecycle_tick` and `instance_advance` (django-q2 tasks in apps.lablets.tasks),
`instance_terminate` (or its two halves `instance_end` and `instance_teardown_now`) and `instance_collect`
(behind the services in apps.lablets.services.instances and .awaited), `warm_lab_hand_over` (behind
lablet_instance_create: an instance that took a warm lab, apps/lablets/engine/warm.py).
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance

from . import instantiate, teardown
from .warm import warm_lab_hand_over  # noqa: F401 (entry point, behind lablet_instance_create)
from .collection import collect as instance_collect
from apps.lablets.services.lease import lease_claim

from .common import load, schedule_pending
from .ending import request_end
from .tick import FREEING_OUTCOMES, lifecycle_tick

__all__ = ["instance_advance", "instance_collect", "instance_end", "instance_teardown_now", "instance_terminate",
           "lifecycle_tick"]


def instance_advance(*, instance_pk: int, actor: str = "system", now: datetime | None = None) -> str:
    """Whatever step is due for one instance now (the `advance_instance` task)."""
    now = now or timezone.now()
    status = load(instance_pk).status
    if status == S.SCHEDULED:
        return instantiate.begin(instance_pk, now=now, actor=actor)
    if status == S.INSTANTIATING:
        step = lease_claim(instance_pk, status=status, now=now, actor=actor)
        return "busy" if step is None else instantiate.advance(step)
    if status in TEARDOWN:
        outcomes = teardown.teardown(instance_pk, now=now, actor=actor)
        if any(o in FREEING_OUTCOMES for o in outcomes):
            schedule_pending(actor)
        return outcomes[-1] if outcomes else "busy"
    if status == S.TERMINATED:
        return teardown.cleanup(instance_pk, now=now, actor=actor)
    return "nothing_due"


def instance_end(*, instance: LabletInstance, actor: str, reason: str = "terminate requested",
                 now: datetime | None = None) -> LabletInstance:
    """The first step of a terminate, at once: without a lab straight to TERMINATED, with one into the
    teardown (STOPPING), left to `instance_teardown_now` or the tick. InvalidTransition (409) when it is
    already terminated."""
    now = now or timezone.now()
    instance, reached = request_end(instance.pk, reason=reason, actor=actor, now=now)
    if reached == S.TERMINATED:
        schedule_pending(actor)
    return instance


def instance_teardown_now(*, instance_pk: int, actor: str, now: datetime | None = None) -> list[str]:
    """The teardown of an ended instance, run here and now as far as it goes (a step CML refuses, or that
    another process is in the middle of, is finished by the tick). Returns the outcomes."""
    outcomes = teardown.teardown(instance_pk, now=now or timezone.now(), actor=actor, force_due=True)
    if any(o in FREEING_OUTCOMES for o in outcomes):
        schedule_pending(actor)
    return outcomes


def instance_terminate(*, instance: LabletInstance, actor: str, reason: str = "terminate requested",
                       now: datetime | None = None) -> LabletInstance:
    """End an instance from any state, now: `instance_end`, then `instance_teardown_now` when it has a lab."""
    now = now or timezone.now()
    instance = instance_end(instance=instance, actor=actor, reason=reason, now=now)
    if instance.status in TEARDOWN:
        instance_teardown_now(instance_pk=instance.pk, actor=actor, now=now)
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=instance.pk)
