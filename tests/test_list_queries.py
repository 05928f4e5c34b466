"""List endpoints run a fixed number of SQL queries, whatever the number of rows (no N+1)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory

pytestmark = pytest.mark.django_db

FEW, MANY = 5, 200


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # conftest gives every role user a password; the default PBKDF2 costs ~0.3 s per user and test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
