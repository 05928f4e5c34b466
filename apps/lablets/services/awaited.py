"""Terminate, collection and a definition's sync, when they need CML (and S3): the long part runs as a django-q2
task, and the request awaits its result row on the event loop, without a thread (docs: apps.api.pending;
the generic half, enqueue and await, is apps.core.awaited).

`..._begin` is the short first step, in the request's thread: the transition that must happen at once
(`instance_end`), or the check that refuses at once (409), then the task is enqueued. Without a lab there
is nothing long to do and the answer is given there and then. `lablet_instance_task_finish` polls the
task's row (asyncio.sleep between reads) for at most LABLET_TASK_WAIT_SECONDS, then answers with the
instance as it then is: the lifecycle tick finishes a teardown left in stopping, stopped or archived.

A definition's sync (`lablet_definition_sync_begin`) refuses at once who may not change the definition or copy
that lab (403); its task runs apps.lablets.services.definitions.lablet_definition_sync whole, and its refusals
(422, 502) are the request's answer. A sync the cluster has not run within LABLET_TASK_WAIT_SECONDS is a 502 (it is still queued).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus, LabletDefinition, LabletInstance
from apps.lablets.services.definitions import lablet_definition_check_sync
from apps.core.awaited import await_task, enqueue, reporting
from apps.core.errors import InvalidTransition, UpstreamUnavailable

TERMINATE_TASK = "apps.lablets.tasks.terminate_instance"
COLLECT_TASK = "apps.lablets.tasks.collect_instance"
DEFINITION_SYNC_TASK = "apps.lablets.tasks.sync_definition"


@dataclass(frozen=True)
class PendingTask:
    """A task enqueued for an instance, whose result the request awaits."""

    task_id: str
    instance_pk: int


def _instance(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=pk)


def _enqueue(func: str, instance: LabletInstance, actor: str) -> PendingTask:
    task_id = enqueue(func, instance.pk, actor, task_name=f"{func.rsplit('.', 1)[-1]}-{instance.public_id}")
    return PendingTask(task_id=task_id, instance_pk=instance.pk)


def lablet_instance_terminate_begin(*, instance: LabletInstance, actor: str,
                                    reason: str = "terminate requested") -> LabletInstance | PendingTask:
    """End the instance at once (apps.lablets.engine.instance_end); with a lab, its teardown is enqueued."""
    from apps.lablets.engine import instance_end

    instance = instance_end(instance=instance, actor=actor, reason=reason)
    if instance.status not in TEARDOWN:
        return _instance(instance.pk)
    return _enqueue(TERMINATE_TASK, instance, actor)


def lablet_instance_start_collection_begin(*, instance: LabletInstance, actor: str) -> LabletInstance | PendingTask:
    """Refuse at once what is not running (409); with a lab on a worker, the collection is enqueued."""
    from apps.lablets.engine import instance_collect

    instance = _instance(instance.pk)
    if instance.status != InstanceStatus.RUNNING:
        raise InvalidTransition("Lablet instance", instance.public_id, instance.status, InstanceStatus.COLLECTING)
    if not (instance.cml_lab_id and instance.worker_id):  # nothing to ask CML
        return instance_collect(instance=instance, actor=actor)
    return _enqueue(COLLECT_TASK, instance, actor)


def lablet_instance_collect_for_task(*, instance_pk: int, actor: str) -> dict:
    """The collection (apps.lablets.engine.instance_collect) as the task runs it: a refusal (409, 502) is
    its result, for the awaiting request to answer with."""
    from apps.lablets.engine import instance_collect

    return reporting(lambda: instance_collect(instance=_instance(instance_pk), actor=actor))


async def lablet_instance_task_finish(*, pending: PendingTask) -> LabletInstance:
    """Await the task's outcome without a thread, at most LABLET_TASK_WAIT_SECONDS; then the instance as it is.
    A refusal the task reported is raised here (its problem+json); a task that crashed is a 500."""
    await await_task(pending.task_id, seconds=settings.LABLET_TASK_WAIT_SECONDS)
    return await LabletInstance.objects.select_related("definition", "worker", "created_by").aget(
        pk=pending.instance_pk)


@dataclass(frozen=True)
class PendingSync:
    """A definition's sync enqueued, whose result the request awaits."""

    task_id: str
    definition_pk: int


def lablet_definition_sync_begin(*, definition: LabletDefinition, user, actor: str, lab_id: str = "",
                                 worker_id: str = "", may_trust: bool = False) -> PendingSync:
    """Refuse at once who may not change the definition or sync it from that lab (403; an unknown worker 422:
    apps.lablets.services.definitions.lablet_definition_check_sync), then enqueue the sync
    (apps.lablets.services.definitions.lablet_definition_sync): it asks CML. `may_trust`: the caller is an admin
    (a trusted definition's changed topology stays trusted)."""
    lablet_definition_check_sync(definition=definition, user=user, lab_id=lab_id, worker_id=worker_id)
    task_id = enqueue(DEFINITION_SYNC_TASK, definition.pk, actor, lab_id, worker_id, may_trust,
                      task_name=f"sync_definition-{definition.public_id}")
    return PendingSync(task_id=task_id, definition_pk=definition.pk)


def lablet_definition_sync_for_task(*, definition_pk: int, actor: str, lab_id: str = "", worker_id: str = "",
                                    may_trust: bool = False) -> dict:
    """The sync as the task runs it: a refusal (422, 502) is its result, for the awaiting request."""
    from apps.lablets.services.definitions import lablet_definition_sync

    return reporting(lambda: lablet_definition_sync(definition=LabletDefinition.objects.get(pk=definition_pk),
                                                    actor=actor, lab_id=lab_id, worker_id=worker_id,
                                                    may_trust=may_trust))


async def lablet_definition_sync_finish(*, pending: PendingSync) -> LabletDefinition:
    """Await the sync without a thread, at most LABLET_TASK_WAIT_SECONDS: the definition it updated, or its
    refusal raised here; a 502 when it has not run by then (it stays queued: the cluster will run it)."""
    if not await await_task(pending.task_id, seconds=settings.LABLET_TASK_WAIT_SECONDS):
        raise UpstreamUnavailable(f"The sync did not finish within {settings.LABLET_TASK_WAIT_SECONDS} s; it is "
                                  "queued and updates the definition when the task queue runs it.")
    return await LabletDefinition.objects.select_related("reference_worker", "created_by").aget(
        pk=pending.definition_pk)
