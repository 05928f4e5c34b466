"""POST .../terminate and .../start-collection await their q task on the event loop: while the teardowns or
collections wait for the cluster, no request holds a thread.

The requests go through the whole Django stack with AsyncClient, on one event loop: every synchronous
step (DRF, transactions, the polls of the task's row) runs on this test's thread, the one with the test's
database connection. No q cluster runs until the test plays it (`_run_queued`, as the cluster would: the
package through django-q2's worker and monitor). A request that did its teardown inline, or waited on a
thread, would make the others (and the GET) queue behind it.
"""

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.test import AsyncClient
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from django_q.tasks import _sync

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletInstance
from tests.lablets.engine_support import fresh, labs, running_worker, scheduled, two_router_definition

pytestmark = pytest.mark.django_db

INSTANCES = "/api/lablet-instances"
COUNT = 4


@pytest.fixture
def no_cluster(monkeypatch):
    """async_task enqueues (the ORM broker) and nothing runs the tasks until the test does."""
    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def running(cml):
    definition = two_router_definition(idle_timeout_minutes=240)
    workers = [running_worker(), running_worker()]
    instances = [scheduled(workers[i % 2], definition) for i in range(COUNT)]
    lifecycle_tick()
    instances = [fresh(i) for i in instances]
    assert [i.status for i in instances] == ["running"] * COUNT and all(i.cml_lab_id for i in instances)
    return instances


@pytest.fixture
def client(admin_user):
    client = AsyncClient()
    client.force_login(admin_user)
    return client


def _threads() -> int:
    return len([t for t in threading.enumerate() if "process_request_thread" not in t.name])  # not the simulator's


def _run_queued() -> int:
    """Play the q cluster: run every queued package through django-q2's worker and monitor (its Task row)."""
    queued = list(OrmQ.objects.all())
    for package in queued:
        task = dict(package.task)
        task["sync"] = True  # in this process: django-q2 then leaves the test's connection open
        _sync(SignedPackage.dumps(task))
        package.delete()
    return len(queued)


def _all_at_once(client, verb: str, instances) -> dict:
    async def run():
        before = _threads()
        requests = [asyncio.ensure_future(client.post(f"{INSTANCES}/{i.public_id}/{verb}")) for i in instances]
        for _ in range(500):  # every request has done its first step and enqueued its task
            if await OrmQ.objects.acount() == len(instances):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # a few polls of the task rows
        seen = {"queued": await OrmQ.objects.acount(), "pending": sum(not r.done() for r in requests),
                "threads": _threads() - before}
        other = await client.get(f"{INSTANCES}/{instances[0].public_id}")  # this thread is free meanwhile
        seen["other"] = (other.status_code, sum(not r.done() for r in requests))
        seen["run"] = await sync_to_async(_run_queued)()
        seen["responses"] = await asyncio.wait_for(asyncio.gather(*requests), timeout=30)
        return seen

    return async_to_sync(run)()


def test_terminates_await_their_teardowns_together_without_a_thread_each(running, client, cml, no_cluster):
    seen = _all_at_once(client, "terminate", running)

    # All of them waited at the same time, each after its first step (STOPPING), none holding a thread.
    assert seen["queued"] == COUNT and seen["pending"] == COUNT, seen
    assert seen["other"] == (200, COUNT), seen
    assert seen["threads"] <= 1, seen  # at most the event loop's own thread, whatever COUNT
    assert seen["run"] == COUNT
    # The answers are the teardown's end, as when it ran inline.
    assert [r.status_code for r in seen["responses"]] == [200] * COUNT, [r.content for r in seen["responses"]]
    assert [r.json()["status"] for r in seen["responses"]] == ["terminated"] * COUNT
    assert {r.json()["id"] for r in seen["responses"]} == {i.public_id for i in running}
    assert labs(cml) == {}
    assert all(r.json()["archive_key"] for r in seen["responses"])


def test_collections_await_their_extractions_together_without_a_thread_each(running, client, cml, no_cluster):
    seen = _all_at_once(client, "start-collection", running)

    assert seen["queued"] == COUNT and seen["pending"] == COUNT, seen
    assert seen["other"] == (200, COUNT), seen
    assert seen["threads"] <= 1, seen
    bodies = [r.json() for r in seen["responses"]]
    assert [r.status_code for r in seen["responses"]] == [200] * COUNT, bodies
    assert [b["status"] for b in bodies] == ["collecting"] * COUNT
    assert all({a["node"] for a in b["artifacts"]} == {"router1", "router2"} for b in bodies), bodies


def test_a_collection_cml_refuses_answers_502_from_the_task(running, client, cml, no_cluster):
    cml.set_faults(down=True)

    seen = _all_at_once(client, "start-collection", running[:1])

    response = seen["responses"][0]
    assert response.status_code == 502 and response["Content-Type"] == "application/problem+json"
    assert "still running" in response.json()["detail"]
    assert fresh(running[0]).status == "running"


def test_without_a_cluster_the_answer_comes_after_the_wait_with_the_instance_as_it_is(running, cml, admin_client,
                                                                                     no_cluster, settings):
    settings.LABLET_TASK_WAIT_SECONDS = 0.3
    instance = running[0]

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    assert response.status_code == 200
    assert response.json()["status"] == "stopping"  # ended at once; the teardown is the task's (or the tick's)
    assert OrmQ.objects.count() == 1
    assert _run_queued() == 1
    assert LabletInstance.objects.get(pk=instance.pk).status == "terminated"
