"""Idempotency-Key on creating POSTs: retries replay the first response and create nothing more."""

import threading

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers.models import Worker
from apps.api.models import IdempotencyRecord
from tests.conftest import client_for
from tests.factories import LabletDefinitionFactory, moto_instance_id

INSTANCES = "/api/lablet-instances"

@pytest.fixture
def definition(db):
    return LabletDefinitionFactory()


def instance_body(definition, owner="student-12345"):
    return {
        "definition_id": definition.public_id,
        "owner_id": owner,
        "timeslot_start": "2030-01-20T09:00:00Z",
        "timeslot_end": "2030-01-20T11:00:00Z",
        "reservation_id": "res-ext-12345",
    }


def post(client, body, key=None, url=INSTANCES):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(url, body, format="json", **headers)


# --- one client at a time -----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_replays_the_first_response_to_a_retry(instructor_client, definition):
    body = instance_body(definition)

    first = post(instructor_client, body, key="retry-1")
    second = post(instructor_client, body, key="retry-1")

    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert LabletInstance.objects.count() == 1


def _definition_body(_):
    return {
        "name": "idem-lab",
        "version": "1.0.0",
        "cml_lab_yaml": "lab:\n  title: idem\n",
        "resource_requirements": {"cpu_cores": 1, "memory_gb": 1, "storage_gb": 1, "node_count": 1},
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url,make_body,model",
    [
        ("/api/lablet-definitions", _definition_body, LabletDefinition),
        ("/api/workers", lambda _: {"aws_instance_id": moto_instance_id()}, Worker),  # a real instance in moto
        (INSTANCES, instance_body, LabletInstance),
    ],
    ids=["lablet-definitions", "workers", "lablet-instances"],
)
def test_every_create_endpoint_honours_the_key(admin_client, definition, url, make_body, model):
    body = make_body(definition)
    before = model.objects.count()

    responses = [post(admin_client, body, key="same-key-everywhere", url=url) for _ in range(3)]

    assert [r.status_code for r in responses] == [201, 201, 201], responses[0].content
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.get("Idempotent-Replayed") for r in responses] == [None, "true", "true"]
    assert model.objects.count() == before + 1


@pytest.mark.django_db
def test_it_refuses_the_same_key_with_another_body(instructor_client, definition):
    assert post(instructor_client, instance_body(definition), key="k-1").status_code == 201

    response = post(instructor_client, instance_body(definition, owner="someone-else"), key="k-1")

    assert response.status_code == 422
    assert response["Content-Type"].startswith("application/problem+json")
    assert "Idempotency-Key" in response.json()["errors"]
    assert LabletInstance.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_the_same_key_on_another_endpoint(admin_client, definition):
    assert post(admin_client, instance_body(definition), key="k-2").status_code == 201

    response = post(admin_client, {"aws_instance_id": moto_instance_id()}, key="k-2", url="/api/workers")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["errors"]
    assert not Worker.objects.exists()


@pytest.mark.django_db
def test_a_create_that_ec2_fails_frees_the_key_for_a_retry(admin_client, ec2):
    body = {"aws_instance_id": moto_instance_id()}
    ec2.arm("DescribeInstances", "UnauthorizedOperation", times=1)

    failed = post(admin_client, body, key="k-ec2", url="/api/workers")
    retried = post(admin_client, body, key="k-ec2", url="/api/workers")

    assert failed.status_code == 502, failed.content
    assert retried.status_code == 201, retried.content
    assert "Idempotent-Replayed" not in retried
    assert Worker.objects.count() == 1


@pytest.mark.django_db
def test_different_users_may_use_the_same_key(instructor_client, other_instructor_client, definition):
    body = instance_body(definition)

    mine = post(instructor_client, body, key="shared-key")
    theirs = post(other_instructor_client, {**body, "owner_id": "student-other"}, key="shared-key")

    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["created_by"] == "instructor2"
    assert LabletInstance.objects.count() == 2


@pytest.mark.django_db
def test_without_a_key_every_post_creates(instructor_client, definition):
    body = instance_body(definition)

    first = post(instructor_client, body)
    second = post(instructor_client, {**body, "owner_id": "student-other"})

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert LabletInstance.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_refused_request_is_not_remembered(instructor_client, definition):
    bad = {**instance_body(definition), "timeslot_end": "2030-01-20T08:00:00Z"}
    assert post(instructor_client, bad, key="k-3").status_code == 422
    assert post(instructor_client, bad, key="k-3").status_code == 422  # evaluated again, not replayed

    # The key is still free for a good request.
    assert post(instructor_client, instance_body(definition), key="k-4").status_code == 201
    assert IdempotencyRecord.objects.filter(key="k-3").count() == 0


@pytest.mark.django_db
def test_it_refuses_an_overlong_key(instructor_client, definition):
    response = post(instructor_client, instance_body(definition), key="k" * 256)

    assert response.status_code == 422
    assert not LabletInstance.objects.exists()


# --- concurrent clients ----------------------------------------------------------------------


def _post_concurrently(bodies_and_keys, raw_key):
    """POST each (body, key) from its own thread and APIClient, all released at once."""
    barrier = threading.Barrier(len(bodies_and_keys))
    results = [None] * len(bodies_and_keys)

    def worker(index, body, key):
        try:
            client = APIClient()
            client.credentials(HTTP_X_API_KEY=raw_key)
            barrier.wait(timeout=10)
            response = post(client, body, key=key)
            results[index] = (response.status_code, response.json(), response.get("Idempotent-Replayed"))
        except Exception as exc:  # noqa: BLE001 -- reported by the assertions below
            results[index] = ("error", repr(exc), None)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, b, k)) for i, (b, k) in enumerate(bodies_and_keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    return results


THREADS = 8


@pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="needs concurrent writers: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_instance(instructor_user, definition):
    raw_key = client_for(instructor_user).raw_key
    body = instance_body(definition)

    results = _post_concurrently([(body, "burst-key")] * THREADS, raw_key)

    assert [status for status, _, _ in results] == [201] * THREADS, results
    assert len({payload["id"] for _, payload, _ in results}) == 1
    assert sorted(replayed or "" for _, _, replayed in results) == [""] + ["true"] * (THREADS - 1)
    assert LabletInstance.objects.count() == 1
    assert IdempotencyRecord.objects.filter(user=instructor_user, key="burst-key").count() == 1


@pytest.mark.django_db(transaction=True)  # both databases: SQLite serialises the writers on its lock
def test_concurrent_posts_with_distinct_keys_each_create(instructor_user, definition):
    raw_key = client_for(instructor_user).raw_key
    requests = [(instance_body(definition, owner=f"student-{n}"), f"key-{n}") for n in range(THREADS)]

    results = _post_concurrently(requests, raw_key)

    assert [status for status, _, _ in results] == [201] * THREADS, results
    assert len({payload["id"] for _, payload, _ in results}) == THREADS
    assert all(replayed is None for _, _, replayed in results)
    assert LabletInstance.objects.count() == THREADS
    assert sorted(LabletInstance.objects.values_list("owner_id", flat=True)) == sorted(
        f"student-{n}" for n in range(THREADS)
    )
