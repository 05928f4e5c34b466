"""POST .../terminate, .../start-collection and a definition's .../sync await their q task on the event loop:
while the teardowns, collections or syncs wait for the cluster, no request holds a thread (how the requests
are sent and the cluster played: tests.awaited_support).
"""

import pytest
import yaml
from django.test import AsyncClient
from django_q.models import OrmQ

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers import cml as cml_gateway
from apps.workers.services.cml import cml_credentials
from tests.awaited_support import posts_at_once, run_queued
from tests.factories import LabletDefinitionFactory, instance_in, placeable_worker
from tests.lablets.engine_support import fresh, labs, running_worker, scheduled, two_router_definition

pytestmark = pytest.mark.django_db

INSTANCES = "/api/lablet-instances"
COUNT = 4


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


def _all_at_once(client, verb: str, instances) -> dict:
    return posts_at_once(client, [f"{INSTANCES}/{i.public_id}/{verb}" for i in instances],
                         other=f"{INSTANCES}/{instances[0].public_id}")


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
    assert run_queued() == 1
    assert LabletInstance.objects.get(pk=instance.pk).status == "terminated"


DEFINITIONS = "/api/lablet-definitions"


def test_definition_syncs_await_their_cml_exports_together_without_a_thread_each(client, ec2, cml, no_cluster):
    worker = placeable_worker()
    topology = open("examples/topologies/two-routers.yaml").read()
    definitions = [LabletDefinitionFactory() for _ in range(COUNT)]
    labs_ = [cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=topology, title=f"ref-{i}")
             for i in range(COUNT)]
    for definition, lab_id in zip(definitions, labs_):
        LabletDefinition.objects.filter(pk=definition.pk).update(reference_lab_id=lab_id, reference_worker=worker)

    seen = posts_at_once(client, [f"{DEFINITIONS}/{d.public_id}/sync" for d in definitions],
                         other=f"{DEFINITIONS}/{definitions[0].public_id}")

    assert seen["queued"] == COUNT and seen["pending"] == COUNT, seen
    assert seen["other"] == (200, COUNT), seen
    assert seen["threads"] <= 1, seen
    assert seen["run"] == COUNT
    bodies = [r.json() for r in seen["responses"]]
    assert [r.status_code for r in seen["responses"]] == [200] * COUNT, bodies
    for definition, body in zip(definitions, bodies):  # the answer is the synced definition, as inline
        stored = LabletDefinition.objects.get(pk=definition.pk)
        assert yaml.safe_load(stored.cml_lab_yaml)["nodes"]
        assert body["content_hash"] == stored.content_hash != definition.content_hash
        assert body["id"] == definition.public_id


def test_a_definition_sync_cml_refuses_answers_502_from_the_task(client, ec2, cml, no_cluster):
    worker = placeable_worker()
    definition = LabletDefinitionFactory()
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker),
                                        topology_yaml=open("examples/topologies/two-routers.yaml").read(),
                                        title="ref")
    instance_in("running", worker=worker, cml_lab_id=lab_id)  # an instance's lab: one an admin may sync from
    cml.set_faults(down=True)

    seen = posts_at_once(client, [f"{DEFINITIONS}/{definition.public_id}/sync"], other=f"{DEFINITIONS}",
                         data={"lab_id": lab_id, "worker_id": worker.public_id})

    assert seen["queued"] == 1 and seen["pending"] == 1, seen
    response = seen["responses"][0]
    assert response.status_code == 502 and response["Content-Type"] == "application/problem+json"
    assert LabletDefinition.objects.get(pk=definition.pk).content_hash == definition.content_hash


def test_a_definition_sync_no_cluster_runs_in_time_is_a_502_and_stays_queued(admin_client, ec2, cml, no_cluster,
                                                                            settings):
    settings.LABLET_TASK_WAIT_SECONDS = 0.3
    worker = placeable_worker()
    definition = LabletDefinitionFactory()
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker),
                                        topology_yaml=open("examples/topologies/two-routers.yaml").read(),
                                        title="ref")
    instance_in("running", worker=worker, cml_lab_id=lab_id)  # an instance's lab: one an admin may sync from

    response = admin_client.post(f"{DEFINITIONS}/{definition.public_id}/sync",
                                 {"lab_id": lab_id, "worker_id": worker.public_id}, content_type="application/json")

    assert response.status_code == 502 and "queued" in response.json()["detail"]
    assert run_queued() == 1  # the cluster runs it later: the sync is then done
    assert LabletDefinition.objects.get(pk=definition.pk).reference_lab_id == lab_id
