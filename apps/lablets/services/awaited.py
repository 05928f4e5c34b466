"""Terminate and collection, when they need CML (and S3): the long part runs as a django-q2 task, and the
request awaits its result row on the event loop, without a thread (docs: labmanager.api.pending).

`..._begin` is the short first step, in the request's thread: the transition that must happen at once
(`instance_end`), or the check that refuses at once (409), then the task is enqueued. Without a lab there
is nothing long to do and the answer is given there and then. `lablet_instance_task_finish` polls the
task's row (asyncio.sleep between reads) for at most LABLET_TASK_WAIT_SECONDS, then answers with the
instance as it then is: the lifecycle tick finishes a teardown left in stopping, stopped or archived.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from django.conf import settings

from apps.lablets.lifecycle import TEARDOWN
from apps.lablets.models import InstanceStatus, LabletInstance
from labmanager import errors
from labmanager.errors import DomainError, InvalidTransition

TERMINATE_TASK = "apps.lablets.tasks.terminate_instance"
COLLECT_TASK = "apps.lablets.tasks.collect_instance"
WAIT_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PendingTask:
    """A task enqueued for an instance, whose result the request awaits."""

    task_id: str
    instance_pk: int


def _instance(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=pk)


def _enqueue(func: str, instance: LabletInstance, actor: str) -> PendingTask:
    from django_q.tasks import async_task

    task_id = async_task(func, instance.pk, actor, task_name=f"{func.rsplit('.', 1)[-1]}-{instance.public_id}",
                         save=True)  # its row is what the request awaits, whatever Q_CLUSTER's save_limit
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

    try:
        instance_collect(instance=_instance(instance_pk), actor=actor)
    except DomainError as exc:
        return {"error": type(exc).__name__, "detail": exc.detail, "errors": exc.errors, "extra": exc.extra}
    return {}


def _raise_reported(result) -> None:
    if not (isinstance(result, dict) and result.get("error")):
        return
    cls = getattr(errors, result["error"], DomainError)
    exc = DomainError.__new__(cls)
    DomainError.__init__(exc, result["detail"], errors=result["errors"], extra=result["extra"])
    raise exc


async def lablet_instance_task_finish(*, pending: PendingTask) -> LabletInstance:
    """Await the task's outcome without a thread, at most LABLET_TASK_WAIT_SECONDS; then the instance as it is.
    A refusal the task reported is raised here (its problem+json); a task that crashed is a 500."""
    from django_q.models import Task

    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.LABLET_TASK_WAIT_SECONDS
    while True:
        task = await Task.objects.filter(id=pending.task_id).only("success", "result").afirst()
        if task is not None:
            if not task.success:
                raise RuntimeError(f"task {pending.task_id} failed: {task.result}")
            _raise_reported(task.result)
            break
        left = deadline - loop.time()
        if left <= 0:
            break
        await asyncio.sleep(min(WAIT_POLL_SECONDS, left))
    return await LabletInstance.objects.select_related("definition", "worker", "created_by").aget(
        pk=pending.instance_pk)
