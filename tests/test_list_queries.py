"""List endpoints run a fixed number of SQL queries, whatever the number of rows (no N+1)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory

pytestmark = pytest.mark.django_db

FEW, MANY = 5, 200



def _instances(count, *, user):
    # Each instance has its own definition and worker, so a missing join costs one query per row.
    for _ in range(count):
        LabletInstanceFactory(worker=WorkerFactory(), created_by=user, definition__created_by=user)


def _definitions(count, *, user):
    LabletDefinitionFactory.create_batch(count, created_by=user)


def _workers(count, *, user):
    WorkerFactory.create_batch(count)


def _queries(client, url, key, expected_rows):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    assert len(response.json()[key]) == expected_rows
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize(
    "url,key,make",
    [
        ("/api/lablet-instances?limit=200", "lablet_instances", _instances),
        ("/api/lablet-definitions?limit=200", "lablet_definitions", _definitions),
        ("/api/workers?limit=200", "workers", _workers),
    ],
    ids=["lablet-instances", "lablet-definitions", "workers"],
)
def test_list_query_count_does_not_grow_with_rows(admin_client, admin_user, url, key, make):
    make(FEW, user=admin_user)
    admin_client.get(url)  # warm-up: the first request of a key stamps last_used_at (one extra write)

    few = _queries(admin_client, url, key, FEW)
    make(MANY - FEW, user=admin_user)
    many = _queries(admin_client, url, key, MANY)

    assert len(many) == len(few), "\n".join(many)


def test_instance_list_for_an_instructor_joins_what_it_shows(instructor_client, instructor_user, django_assert_max_num_queries):
    # The instructor's list is filtered by creator; the serializer still needs definition, worker and creator.
    _instances(30, user=instructor_user)
    instructor_client.get("/api/lablet-instances")

    with django_assert_max_num_queries(8):
        response = instructor_client.get("/api/lablet-instances?limit=30")

    rows = response.json()["lablet_instances"]
    assert len(rows) == 30
    assert all(row["worker_id"] and row["definition_name"] and row["created_by"] == "instructor1" for row in rows)


@pytest.mark.parametrize("spelling", ["true", "True", "1", "yes", "on"])
def test_every_boolean_spelling_of_include_terminated_shows_terminated_workers(admin_client, spelling):
    from apps.workers.services import worker_terminate
    from tests.factories import WorkerFactory

    worker_terminate(worker=WorkerFactory(), actor="tests")
    assert admin_client.get("/api/workers").json()["total"] == 0
    assert admin_client.get(f"/api/workers?include_terminated={spelling}").json()["total"] == 1


@pytest.mark.parametrize("path", ["/api/workers", "/api/lablet-instances"])
def test_it_refuses_an_unknown_status_filter(admin_client, path):
    response = admin_client.get(f"{path}?status=running,bogus")
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert "bogus" in response.json()["errors"]["status"][0]
