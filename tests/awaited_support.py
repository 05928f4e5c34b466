"""Requests that await a q task (apps.core.awaited), sent all at once through the whole Django stack with
AsyncClient on one event loop, while no q cluster runs until the test plays it (`run_queued`, as the
cluster would: the package through django-q2's worker and monitor). Every synchronous step (DRF,
transactions, the polls of the task's row) runs on the test's thread, the one with its database
connection: a request that did its CML call inline, or waited on a thread, makes the others (and the GET)
queue behind it."""

import asyncio
import threading

from asgiref.sync import async_to_sync, sync_to_async
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

    async def run():
        before = threads()
        requests = [asyncio.ensure_future(client.post(url, data or {}, content_type="application/json"))
                    for url in urls]
        for _ in range(500):  # every request has done its first step and enqueued its task
            if await OrmQ.objects.acount() == len(urls):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a few polls of the task rows
        seen = {"queued": await OrmQ.objects.acount(), "pending": sum(not r.done() for r in requests),
                "threads": threads() - before}
        answer = await client.get(other)  # this thread is free meanwhile
        seen["other"] = (answer.status_code, sum(not r.done() for r in requests))
        seen["run"] = await sync_to_async(run_queued)()
        seen["responses"] = await asyncio.wait_for(asyncio.gather(*requests), timeout=30)
        return seen

    return async_to_sync(run)()
