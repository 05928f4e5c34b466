"""The workers REST contract: /api/workers list, import/launch, detail, start, stop, terminate.

Creation talks to EC2 (moto behind the simulator, see tests/conftest.py): imports name real instances.
EC2-specific behaviour (tags, templates, sync, failures) is in test_ec2.py."""

import boto3
import pytest
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.workers.models import Worker
from apps.workers.services import worker_transition
from tests.factories import WorkerFactory, moto_instance_id

pytestmark = pytest.mark.django_db

WORKERS = "/api/workers"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "trace_id"}
UNKNOWN_INSTANCE = "i-0abc123def456789"  # well-formed, but no such instance in EC2


@pytest.fixture
def instance_id():
    """A real, running, untagged m5zn.metal instance in the simulator's us-west-2."""
    return moto_instance_id()


def import_body(instance_id, region="us-west-2"):
    return {"aws_instance_id": instance_id, "aws_region": region}


def describe(instance_id, region="us-west-2") -> dict:
    client = boto3.client("ec2", region_name=region, endpoint_url=settings.AWS_ENDPOINT_URL)
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def assert_problem(response, status, *, error_field=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_KEYS <= set(body)
    assert body["status"] == status
    if error_field is not None:
        assert error_field in body["errors"], body
    return body


def worker_in(state: str) -> Worker:
    worker = WorkerFactory()
    if state != "pending":
        worker = worker_transition(worker=worker, to=state, actor="tests")
    return worker


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["workers"]]


# --- create -------------------------------------------------------------------------------------


def test_it_imports_an_existing_ec2_instance(operator_client, instance_id):
    response = operator_client.post(WORKERS, import_body(instance_id), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("worker-")
    assert body["aws_instance_id"] == instance_id
    assert body["aws_region"] == "us-west-2"
    assert body["name"] == instance_id
    assert body["status"] == "running"
    assert body["instance_type"] == "m5zn.metal"
    assert body["ip_address"] == describe(instance_id)["PublicIpAddress"]
    assert body["capacity"] == {"cpu_cores": 48, "memory_gb": 192, "storage_gb": 500, "max_nodes": 100}
    for field in ("ip_address", "cml_service_status", "license_status", "instance_type", "usage", "draining"):
        assert field in body
    worker = Worker.objects.get(public_id=body["id"])
    assert worker.status == "running"
    actions = list(AuditEvent.objects.filter(resource_id=body["id"]).values_list("action", flat=True))
    assert actions == ["worker.import", "worker.transition"]


def test_it_refuses_to_import_an_instance_ec2_does_not_know(operator_client):
    response = operator_client.post(WORKERS, import_body(UNKNOWN_INSTANCE), format="json")

    body = assert_problem(response, 422, error_field="aws_instance_id")
    assert UNKNOWN_INSTANCE in body["errors"]["aws_instance_id"][0]
    assert not Worker.objects.exists()


def test_it_launches_a_worker_of_a_known_instance_type(admin_client):
    response = admin_client.post(WORKERS, {"name": "cml-worker-prod-01", "instance_type": "m5.2xlarge"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "cml-worker-prod-01"
    assert body["aws_instance_id"].startswith("i-")
    assert body["status"] == "running"  # moto starts instances at once
    assert body["instance_type"] == "m5.2xlarge"
    assert body["capacity"] == {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 150, "max_nodes": 15}
    assert AuditEvent.objects.filter(resource_id=body["id"], action="worker.launch").count() == 1
    instance = describe(body["aws_instance_id"])
    assert instance["ImageId"] == settings.WORKER_AMI_ID
    assert instance["InstanceType"] == "m5.2xlarge"


def test_it_refuses_an_instance_type_ec2_does_not_know_without_capacity(operator_client):
    response = operator_client.post(WORKERS, {"name": "w", "instance_type": "t9.gigantic"}, format="json")

    assert_problem(response, 422, error_field="instance_type")  # DescribeInstanceTypes: InvalidInstanceType
    assert not Worker.objects.exists()


def test_it_launches_an_unknown_instance_type_with_its_capacity(operator_client):
    capacity = {"cpu_cores": 12, "memory_gb": 24, "storage_gb": 100, "max_nodes": 6}

    response = operator_client.post(
        WORKERS, {"name": "w", "instance_type": "t9.gigantic", "capacity": capacity}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["capacity"] == capacity


@pytest.mark.parametrize("bad_id", ["i-xyz", "0abc123def456789", "i-0ABC123DEF456789", "i-0abc12", "vol-0abc123def456789"])
def test_it_refuses_a_malformed_instance_id(operator_client, bad_id):
    response = operator_client.post(WORKERS, {"aws_instance_id": bad_id}, format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert not Worker.objects.exists()


def test_it_needs_a_name_or_an_instance_id(operator_client):
    assert_problem(operator_client.post(WORKERS, {"aws_region": "eu-west-1"}, format="json"), 422, error_field="name")


def test_it_refuses_to_import_the_same_live_instance_twice(operator_client, instance_id):
    assert operator_client.post(WORKERS, import_body(instance_id), format="json").status_code == 201

    response = operator_client.post(WORKERS, import_body(instance_id), format="json")

    assert_problem(response, 409)
    assert Worker.objects.count() == 1


def test_it_looks_for_an_instance_id_in_the_region_it_is_imported_from(operator_client, instance_id):
    assert operator_client.post(WORKERS, import_body(instance_id), format="json").status_code == 201

    # Not a 409: the duplicate check is per region. EC2's eu-west-1 has no such instance.
    response = operator_client.post(WORKERS, import_body(instance_id, region="eu-west-1"), format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert Worker.objects.count() == 1


def test_it_imports_an_instance_again_once_its_worker_is_terminated(operator_client, instance_id):
    # The record was terminated while its EC2 instance lives on (EC2 still says running).
    gone = WorkerFactory(aws_instance_id=instance_id)
    gone = worker_transition(worker=gone, to="terminated", actor="tests")

    response = operator_client.post(WORKERS, import_body(instance_id), format="json")

    assert response.status_code == 201, response.content
    assert response.json()["id"] != gone.public_id
    assert Worker.objects.filter(aws_instance_id=instance_id).count() == 2


def test_it_refuses_to_import_an_instance_terminated_through_the_api(operator_client, instance_id):
    first = operator_client.post(WORKERS, import_body(instance_id), format="json").json()
    assert operator_client.delete(f"{WORKERS}/{first['id']}").status_code == 202

    response = operator_client.post(WORKERS, import_body(instance_id), format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert Worker.objects.count() == 1


def test_it_refuses_worker_writes_by_instructors(instructor_client):
    worker = worker_in("running")

    assert_problem(instructor_client.post(WORKERS, import_body(moto_instance_id()), format="json"), 403)
    assert_problem(instructor_client.post(f"{WORKERS}/{worker.public_id}/stop"), 403)
    assert_problem(instructor_client.delete(f"{WORKERS}/{worker.public_id}"), 403)
    assert Worker.objects.get(pk=worker.pk).status == "running"
    assert instructor_client.get(f"{WORKERS}/{worker.public_id}").status_code == 200


# --- read ---------------------------------------------------------------------------------------


def test_it_shows_a_worker(operator_client):
    worker = worker_in("running")

    response = operator_client.get(f"{WORKERS}/{worker.public_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == worker.public_id
    assert body["name"] == worker.name
    assert body["status"] == "running"


def test_it_answers_404_for_an_unknown_worker(operator_client):
    assert_problem(operator_client.get(f"{WORKERS}/worker-0000000000000000"), 404)
    assert_problem(operator_client.post(f"{WORKERS}/worker-0000000000000000/start"), 404)


def test_it_lists_workers_in_an_envelope(operator_client):
    workers = [worker_in("running") for _ in range(3)]

    response = operator_client.get(WORKERS, {"limit": 2})

    body = response.json()
    assert set(body) == {"workers", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
    assert ids(response) == [workers[2].public_id, workers[1].public_id]
    assert response["X-Total-Count"] == "3"
    assert 'rel="next"' in response["Link"]


def test_it_hides_terminated_workers_unless_asked(operator_client):
    live = worker_in("running")
    gone = worker_in("terminated")

    assert ids(operator_client.get(WORKERS)) == [live.public_id]
    assert sorted(ids(operator_client.get(WORKERS, {"include_terminated": "true"}))) == sorted(
        [live.public_id, gone.public_id]
    )
    assert ids(operator_client.get(WORKERS, {"status": "terminated"})) == [gone.public_id]


def test_it_filters_workers_by_comma_separated_status(operator_client):
    running = worker_in("running")
    stopped = worker_in("stopped")
    worker_in("failed")

    assert sorted(ids(operator_client.get(WORKERS, {"status": "running,stopped"}))) == sorted(
        [running.public_id, stopped.public_id]
    )


def test_it_sorts_workers_by_name(operator_client):
    for name in ("b-worker", "c-worker", "a-worker"):
        WorkerFactory(name=name)

    response = operator_client.get(WORKERS, {"sort": "name", "order": "asc"})

    assert [w["name"] for w in response.json()["workers"]] == ["a-worker", "b-worker", "c-worker"]
    assert_problem(operator_client.get(WORKERS, {"sort": "aws_instance_id"}), 422, error_field="sort")


# --- start / stop / terminate ---------------------------------------------------------------


@pytest.mark.parametrize("state", ["stopped", "failed"])
def test_it_starts_a_stopped_worker(operator_client, state):
    worker = worker_in(state)

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/start")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "running"
    assert Worker.objects.get(pk=worker.pk).status == "running"


@pytest.mark.parametrize("state", ["running", "stopping", "terminated"])
def test_it_answers_409_to_start_from_the_wrong_state(operator_client, state):
    worker = worker_in(state)
    events = AuditEvent.objects.count()

    assert_problem(operator_client.post(f"{WORKERS}/{worker.public_id}/start"), 409)
    assert Worker.objects.get(pk=worker.pk).status == state
    assert AuditEvent.objects.count() == events + 1  # only the refusal (api_call.refused)


def test_it_stops_a_running_worker(operator_client):
    worker = worker_in("running")

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/stop")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "stopped"
    transitions = AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.transition")
    assert [(e.metadata["from"], e.metadata["to"]) for e in transitions][-2:] == [
        ("running", "stopping"), ("stopping", "stopped"),
    ]


@pytest.mark.parametrize("state", ["stopped", "pending", "terminated", "failed"])
def test_it_answers_409_to_stop_from_the_wrong_state(operator_client, state):
    worker = worker_in(state)
    events = AuditEvent.objects.count()

    assert_problem(operator_client.post(f"{WORKERS}/{worker.public_id}/stop"), 409)
    assert Worker.objects.get(pk=worker.pk).status == state
    assert AuditEvent.objects.count() == events + 1  # only the refusal (api_call.refused)


def test_it_terminates_a_worker_on_delete(operator_client):
    worker = worker_in("running")

    response = operator_client.delete(f"{WORKERS}/{worker.public_id}")

    assert response.status_code == 202, response.content  # EC2 shuts the instance down in the background
    assert response.json()["status"] == "terminated"
    assert response["Location"] == f"http://testserver{WORKERS}/{worker.public_id}"
    assert Worker.objects.get(pk=worker.pk).status == "terminated"  # kept, not deleted
    assert describe(worker.aws_instance_id)["State"]["Name"] == "terminated"
    assert operator_client.get(f"{WORKERS}/{worker.public_id}").json()["status"] == "terminated"
    assert ids(operator_client.get(WORKERS)) == []


def test_it_answers_409_to_terminating_twice(operator_client):
    worker = worker_in("terminated")

    assert_problem(operator_client.delete(f"{WORKERS}/{worker.public_id}"), 409)
