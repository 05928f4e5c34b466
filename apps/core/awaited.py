"""A request's long part (CML, S3) as a django-q2 task whose outcome the request awaits without a thread.

The generic half of the pattern (the HTTP half is apps.api.pending): a service's `..._begin` does
the short step in the request's thread and `enqueue`s the task; the task runs the long part and, through
`reporting`, returns a refusal (a DomainError: 409, 422, 502) as its result instead of raising it; the
async `..._finish` calls `await_task`, which polls the task's row (asyncio.sleep between reads) for at most
the given seconds and raises that refusal again in the request, so that its answer is the problem+json it
was when the work ran inline. Used by apps.lablets.services.awaited and apps.workers.services.cml.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from apps.core import errors
from apps.core.errors import DomainError

WAIT_POLL_SECONDS = 0.5


def enqueue(func: str, *args: Any, task_name: str) -> str:
    """Enqueue `func(*args)`; its task row is kept (save=True, whatever Q_CLUSTER's save_limit): it is what
    the request awaits. Returns the task's id."""
    from django_q.tasks import async_task

    return async_task(func, *args, task_name=task_name, save=True)


def reporting(call: Callable[[], Any]) -> dict:
    """Run `call` as a task: {} when it went through, or the DomainError it raised as a result (for
    `await_task` to raise again in the awaiting request)."""
    try:
        call()
    except DomainError as exc:
        # the nearest class apps.core.errors has (a subclass elsewhere, e.g. TopologyRefused, keeps its status)
        name = next(c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
        return {"error": name, "detail": exc.detail, "errors": exc.errors, "extra": exc.extra, "code": exc.code}
    return {}


def raise_reported(result: Any) -> None:
    """Raise the DomainError a task reported (`reporting`), as its own class when apps.core.errors has it."""
    if not (isinstance(result, dict) and result.get("error")):
        return
    cls = getattr(errors, result["error"], DomainError)
    if not (isinstance(cls, type) and issubclass(cls, DomainError)):
        cls = DomainError
    exc = DomainError.__new__(cls)
    DomainError.__init__(exc, result["detail"], errors=result["errors"], extra=result["extra"],
                         code=result.get("code", ""))
    raise exc


async def await_task(task_id: str, *, seconds: float) -> bool:
    """Await the task's row without a thread, at most `seconds`: True once it has run (a refusal it reported
    is raised here; a task that crashed is a RuntimeError, a 500), False if it has not run by then."""
    from django_q.models import Task

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        task = await Task.objects.filter(id=task_id).only("success", "result").afirst()
        if task is not None:
            if not task.success:
                raise RuntimeError(f"task {task_id} failed: {task.result}")
            raise_reported(task.result)
            return True
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(WAIT_POLL_SECONDS, left))
