"""Requests that await a q task (apps.core.awaited), sent all at once through the whole Django stack with
AsyncClient on one event loop, while no q cluster runs until the test plays it (`run_queued`, as the
cluster would: the package through django-q2's worker and monitor). Every synchronous step (DRF,
transactions, the polls of the task's row) runs on the test's thread, the one with its database
connection: a request that did its CML call inline, or waited on a thread, makes the others (and the GET)
queue behind it."""

import asyncio
import threading

from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from django_q.tasks import _sync


def threads() -> int:
    return len([t for t in threading.enumerate() if "process_request_thread" not in t.name])  # not the simulator's


def run_queued() -> int:
    """Play the q cluster: run every queued package through django-q2's worker and monitor (its Task row)."""
    queued = list(OrmQ.objects.all())
    for package in queued:
        task = dict(package.task)
        task["sync"] = True  # in this process: django-q2 then leaves the test's connection open
        _sync(SignedPackage.dumps(task))
        package.delete()
    return len(queued)


def posts_at_once(client, urls: list[str], other: str, data: dict | None = None) -> dict:
    """POST every url at once; once each has enqueued its task, what is seen (queued tasks, pending requests,
    threads added, a GET of `other` meanwhile), then the cluster runs the tasks and the responses come."""

    task_reads = []

    def count_task_reads(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("SELECT") and '"django_q_task"' in sql:
            task_reads.append(sql)
        return execute(sql, params, many, context)

    async def until(condition, what: str, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await condition():
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)  # the poll interval

    async def run():
        before = threads()
        requests = [asyncio.ensure_future(client.post(url, data or {}, content_type="application/json"))
                    for url in urls]

        async def all_enqueued():
            return await OrmQ.objects.acount() == len(urls) or any(r.done() for r in requests)

        async def polled_twice():  # each has read its task's row, slept in its wait, and read it again
            return len(task_reads) >= 2 * len(urls) or any(r.done() for r in requests)

        await until(all_enqueued, "every request to do its first step and enqueue its task")
        await until(polled_twice, "the requests to poll their task rows")
        seen = {"queued": await OrmQ.objects.acount(), "pending": sum(not r.done() for r in requests),
                "threads": threads() - before}
        answer = await client.get(other)  # this thread is free meanwhile
        seen["other"] = (answer.status_code, sum(not r.done() for r in requests))
        seen["run"] = await sync_to_async(run_queued)()
        seen["responses"] = await asyncio.wait_for(asyncio.gather(*requests), timeout=30)
        return seen

    # The polls run on this thread (the requests' synchronous steps do), on its connection: counted there.
    with connection.execute_wrapper(count_task_reads):
        return async_to_sync(run)()
