"""POST /api/workers/{id}/sync awaits its q task (the CML check) on the event loop: while the checks wait for
the cluster, no request holds a thread (how the requests are sent and the cluster played:
tests.awaited_support)."""

import pytest
from django.test import AsyncClient
from django_q.models import OrmQ

from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from tests.awaited_support import posts_at_once, run_queued
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db

WORKERS = "/api/workers"
COUNT = 4


@pytest.fixture
def client(operator_user):
    client = AsyncClient()
    client.force_login(operator_user)
    return client


def _running(**fields) -> Worker:
    """A running worker whose CML has never been checked."""
    return worker_transition(worker=WorkerFactory(**fields), to="running", actor="tests")


def test_syncs_await_their_cml_checks_together_without_a_thread_each(client, cml, no_cluster):
    workers = [_running() for _ in range(COUNT)]
    assert all(w.last_cml_sync_at is None for w in workers)

    seen = posts_at_once(client, [f"{WORKERS}/{w.public_id}/sync" for w in workers],
                         other=f"{WORKERS}/{workers[0].public_id}")

    assert seen["queued"] == COUNT and seen["pending"] == COUNT, seen
    assert seen["other"] == (200, COUNT), seen
    assert seen["threads"] <= 1, seen  # at most the event loop's own thread, whatever COUNT
    assert seen["run"] == COUNT
    bodies = [r.json() for r in seen["responses"]]
    assert [r.status_code for r in seen["responses"]] == [200] * COUNT, bodies
    # The answers are the check's outcome, as when it ran inline.
    assert [b["id"] for b in bodies] == [w.public_id for w in workers]
    assert [b["cml_service_status"] for b in bodies] == ["available"] * COUNT
    assert all(b["cml"]["version"].startswith("2.10") for b in bodies), bodies
    assert all(Worker.objects.get(pk=w.pk).last_cml_sync_at for w in workers)


def test_an_unreachable_cml_is_recorded_by_the_task_and_answered(client, cml, no_cluster):
    worker = _running()
    cml.set_faults(down=True)

    seen = posts_at_once(client, [f"{WORKERS}/{worker.public_id}/sync"], other=WORKERS)

    assert seen["queued"] == 1 and seen["pending"] == 1, seen
    response = seen["responses"][0]
    assert response.status_code == 200, response.content
    assert response.json()["cml_service_status"] != "available"
    assert response.json()["cml_service_status"] == Worker.objects.get(pk=worker.pk).cml_service_status


def test_without_a_cluster_the_answer_comes_after_the_wait_with_the_worker_as_it_is(operator_client, cml,
                                                                                    no_cluster, settings):
    settings.TASK_WAIT_SECONDS = 0.3
    worker = _running()

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/sync")

    assert response.status_code == 200
    assert response.json()["id"] == worker.public_id
    assert Worker.objects.get(pk=worker.pk).last_cml_sync_at is None  # not checked yet: the task is queued
    assert OrmQ.objects.count() == 1
    assert run_queued() == 1
    assert Worker.objects.get(pk=worker.pk).last_cml_sync_at is not None
