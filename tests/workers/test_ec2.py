"""Workers as EC2 instances: import, launch, start, stop, drain, terminate, the ec2_sync job, EC2
failures, capacity overrides, worker templates and the placement rules.

No mocks: real boto3 over HTTP to moto behind the fault-injecting simulator (tests/conftest.py). Tests
that read the whole of EC2 (the sync) start from a clean one (`ec2`); the others share the session's
instances (`sim`: faults cleared afterwards), which keeps them fast. Tests change EC2 "outside LabManager"
with their own boto3 client, which never retries."""

import time

import boto3
import pytest
from botocore.config import Config
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.workers.ec2 import MANAGED_TAG, WORKER_ID_TAG
from apps.workers.models import Worker, WorkerTemplate
from apps.workers.selectors import worker_placeable_list
from apps.workers.services import worker_ec2_sync, worker_transition
from tests.factories import WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

WORKERS = "/api/workers"
TEMPLATES = "/api/worker-templates"
REGION = "us-west-2"


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def sim(ec2_sim):
    """The EC2 simulator as the session left it (instances of other tests included), faults cleared after."""
    ec2_sim.disarm()
    yield ec2_sim
    ec2_sim.disarm()


def calls_after(sim, since: int) -> list[str]:
    return sim.calls[since:]


def aws(region: str = REGION):
    return boto3.client("ec2", region_name=region, endpoint_url=settings.AWS_ENDPOINT_URL,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def launch_outside(*, region: str = REGION, tags: dict | None = None) -> str:
    """An instance started without LabManager (running at once in moto)."""
    kwargs = {"ImageId": settings.WORKER_AMI_ID, "InstanceType": "m5zn.metal", "MinCount": 1, "MaxCount": 1}
    if tags:
        kwargs["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
    return aws(region).run_instances(**kwargs)["Instances"][0]["InstanceId"]


def describe(instance_id: str, region: str = REGION) -> dict:
    return aws(region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def ec2_state(instance_id: str, region: str = REGION) -> str:
    return describe(instance_id, region)["State"]["Name"]


def ec2_tags(instance_id: str, region: str = REGION) -> dict:
    return {t["Key"]: t["Value"] for t in describe(instance_id, region).get("Tags", [])}


def worker_in(state: str, **kwargs) -> Worker:
    """A record over a real running instance, moved to `state` through the lifecycle function."""
    worker = WorkerFactory(**kwargs)
    for step in {"pending": [], "running": ["running"], "stopped": ["running", "stopped"],
                 "terminated": ["terminated"]}[state]:
        worker = worker_transition(worker=worker, to=step, actor="tests")
    return worker


def status_of(worker: Worker) -> str:
    return Worker.objects.get(pk=worker.pk).status


def assert_problem(response, status: int, *, error_field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"] and body["trace_id"]
    if error_field is not None:
        assert error_field in body["errors"], body
    return body


def failed_ec2_calls(**filters):
    return AuditEvent.objects.filter(event_type="worker.ec2_failed", success=False, **filters)


def template(**overrides) -> WorkerTemplate:
    fields = {"name": "small-eu", "instance_type": "c5.2xlarge", "aws_region": "eu-west-1", "cpu_cores": 10,
              "memory_gb": 20, "storage_gb": 200, "max_nodes": 12} | overrides
    return WorkerTemplate.objects.create(**fields)


# --- import -------------------------------------------------------------------------------------


def test_import_tags_the_instance_as_managed_with_the_worker_id(operator_client, sim):
    instance_id = launch_outside(tags={"Name": "cml-lab-7"})

    response = operator_client.post(WORKERS, {"aws_instance_id": instance_id, "aws_region": REGION}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["status"]) == ("cml-lab-7", "running")
    tags = ec2_tags(instance_id)
    assert tags[MANAGED_TAG] == "true"
    assert tags[WORKER_ID_TAG] == body["id"]
    assert body["ip_address"] == describe(instance_id)["PublicIpAddress"]


def test_import_of_an_instance_unknown_to_ec2_is_422_and_audited(operator_client, sim):
    response = operator_client.post(WORKERS, {"aws_instance_id": "i-0123456789abcdef0"}, format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert not Worker.objects.exists()
    assert failed_ec2_calls(action="worker.import").count() == 1


def test_import_of_a_terminated_instance_is_422(operator_client, sim):
    instance_id = launch_outside()
    aws().terminate_instances(InstanceIds=[instance_id])

    response = operator_client.post(WORKERS, {"aws_instance_id": instance_id}, format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert not Worker.objects.exists()


# --- launch -------------------------------------------------------------------------------------


def test_launch_from_a_template_takes_its_type_region_image_and_capacity(operator_client, sim):
    tpl = template(ami_id="ami-0f00d5eedf00d5eed")

    response = operator_client.post(WORKERS, {"name": "eu-1", "template_id": tpl.public_id}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["template_id"] == tpl.public_id
    assert (body["instance_type"], body["aws_region"]) == ("c5.2xlarge", "eu-west-1")
    assert body["capacity"] == {"cpu_cores": 10, "memory_gb": 20, "storage_gb": 200, "max_nodes": 12}
    assert body["status"] == "running"  # moto runs the instance at once; the launch reads it back
    instance = describe(body["aws_instance_id"], region="eu-west-1")
    assert (instance["InstanceType"], instance["ImageId"]) == ("c5.2xlarge", "ami-0f00d5eedf00d5eed")
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {MANAGED_TAG: "true", WORKER_ID_TAG: body["id"], "Name": "eu-1"}


def test_launch_from_a_template_without_an_image_uses_the_configured_ami(operator_client, sim):
    tpl = template(aws_region=REGION)

    body = operator_client.post(WORKERS, {"name": "w", "template_id": tpl.public_id}, format="json").json()

    assert describe(body["aws_instance_id"])["ImageId"] == settings.WORKER_AMI_ID


def test_launch_from_an_unknown_template_is_422(operator_client, sim):
    since = len(sim.calls)

    response = operator_client.post(WORKERS, {"name": "w", "template_id": "wtpl-nope"}, format="json")

    assert_problem(response, 422, error_field="template_id")
    assert calls_after(sim, since) == []


def test_launch_with_no_ami_configured_is_422(operator_client, sim, settings):
    settings.WORKER_AMI_ID = ""
    settings.WORKER_LAUNCH_TEMPLATE_ID = ""
    since = len(sim.calls)

    response = operator_client.post(WORKERS, {"name": "w", "instance_type": "m5.2xlarge"}, format="json")

    assert_problem(response, 422, error_field="template_id")
    assert not Worker.objects.exists()
    assert calls_after(sim, since) == []


# --- start / stop -------------------------------------------------------------------------------


def test_stop_stops_the_instance_and_the_record(operator_client, sim):
    worker = worker_in("running")

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/stop")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "stopped"
    assert ec2_state(worker.aws_instance_id) == "stopped"


def test_start_starts_the_instance_and_the_record(operator_client, sim):
    worker = worker_in("stopped")
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/start")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "running"
    assert ec2_state(worker.aws_instance_id) == "running"
    transitions = AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.transition")
    assert [(e.metadata["from"], e.metadata["to"]) for e in transitions][-2:] == [
        ("stopped", "pending"), ("pending", "running"),
    ]


# --- drain --------------------------------------------------------------------------------------


def test_drain_stops_placements_without_touching_ec2_and_undrain_restores_them(operator_client, sim):
    worker = worker_in("running")
    Worker.objects.filter(pk=worker.pk).update(cml_service_status="available")
    since = len(sim.calls)

    drained = operator_client.post(f"{WORKERS}/{worker.public_id}/drain")
    again = operator_client.post(f"{WORKERS}/{worker.public_id}/drain")

    assert drained.status_code == again.status_code == 200, drained.content
    assert (drained.json()["draining"], drained.json()["placeable"], drained.json()["status"]) == (True, False, "running")
    assert calls_after(sim, since) == []
    assert AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.drained").count() == 1

    undrained = operator_client.post(f"{WORKERS}/{worker.public_id}/undrain")

    assert (undrained.json()["draining"], undrained.json()["placeable"]) == (False, True)
    assert AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.undrained").count() == 1


@pytest.mark.parametrize("verb", ["drain", "undrain"])
def test_drain_of_a_terminated_worker_is_409(operator_client, sim, verb):
    worker = worker_in("terminated")
    events = AuditEvent.objects.count()

    assert_problem(operator_client.post(f"{WORKERS}/{worker.public_id}/{verb}"), 409)
    assert AuditEvent.objects.count() == events + 1  # only the refusal (api_call.refused)


# --- terminate ----------------------------------------------------------------------------------


def test_terminate_is_refused_while_a_live_lablet_instance_is_on_the_worker(operator_client, sim):
    worker = worker_in("running")
    instance_in("scheduled", worker=worker)
    since = len(sim.calls)

    response = operator_client.delete(f"{WORKERS}/{worker.public_id}")

    assert "live lablet instance" in assert_problem(response, 409)["detail"]
    assert calls_after(sim, since) == []  # EC2 not asked
    assert status_of(worker) == "running"
    assert ec2_state(worker.aws_instance_id) == "running"


def test_terminate_with_force_terminates_a_worker_that_hosts_live_instances(operator_client, sim):
    worker = worker_in("running")
    instance_in("scheduled", worker=worker)

    response = operator_client.delete(f"{WORKERS}/{worker.public_id}?force=true")

    assert response.status_code == 202, response.content
    assert response.json()["status"] == "terminated"
    assert ec2_state(worker.aws_instance_id) == "terminated"
    last = AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.transition").last()
    assert "force" in last.metadata["reason"]


def test_terminate_does_not_count_finished_lablet_instances(operator_client, sim):
    worker = worker_in("running")
    instance_in("terminated", worker=worker)

    assert operator_client.delete(f"{WORKERS}/{worker.public_id}").status_code == 202
    assert ec2_state(worker.aws_instance_id) == "terminated"


def test_terminate_follows_an_instance_already_gone_from_ec2(operator_client, sim):
    worker = worker_in("running", aws_instance_id="i-0123456789abcdef0")  # EC2 has no such instance

    response = operator_client.delete(f"{WORKERS}/{worker.public_id}")

    assert response.status_code == 202, response.content
    assert status_of(worker) == "terminated"


# --- ec2_sync -----------------------------------------------------------------------------------


def test_sync_marks_a_worker_stopped_outside_labmanager_and_audits_it(ec2):
    worker = worker_in("running", aws_instance_id=launch_outside())
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])

    summary = worker_ec2_sync()

    assert status_of(worker) == "stopped"
    assert summary["updated"] == 1 and summary["errors"] == []
    event = AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.stopped").get()
    assert event.actor == "system"
    assert "ec2_sync" in event.metadata["reason"]
    assert (event.metadata["from"], event.metadata["to"]) == ("running", "stopped")


def test_sync_marks_a_worker_terminated_outside_labmanager(ec2):
    worker = worker_in("running", aws_instance_id=launch_outside())
    aws().terminate_instances(InstanceIds=[worker.aws_instance_id])

    worker_ec2_sync()

    assert status_of(worker) == "terminated"
    assert AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.terminated").exists()


def test_sync_marks_workers_whose_instance_vanished_terminated(ec2):
    forgotten = worker_in("running", aws_instance_id=launch_outside())
    ec2.reset()  # moto forgets every instance (none came from the factory's pool); the record remains
    never_there = worker_in("stopped", aws_instance_id="i-0123456789abcdef0")

    summary = worker_ec2_sync()

    assert summary["gone"] == 2, summary
    for worker in (forgotten, never_there):
        assert status_of(worker) == "terminated"
        event = AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.terminated").get()
        assert "no longer exists" in event.metadata["reason"]


def test_sync_imports_a_tagged_instance_labmanager_does_not_know(ec2):
    instance_id = launch_outside(tags={MANAGED_TAG: "true", WORKER_ID_TAG: "worker-00000000deadbeef", "Name": "lost"})

    summary = worker_ec2_sync()

    assert summary["imported"] == 1, summary
    worker = Worker.objects.get(aws_instance_id=instance_id)
    assert (worker.status, worker.name, worker.aws_region) == ("running", "lost", REGION)
    assert ec2_tags(instance_id)[WORKER_ID_TAG] == worker.public_id  # re-tagged with its new id
    assert worker_ec2_sync()["imported"] == 0  # known now: imported once


def test_sync_leaves_untagged_instances_alone(ec2):
    launch_outside()

    assert worker_ec2_sync()["imported"] == 0
    assert not Worker.objects.exists()


def test_sync_of_30_workers_makes_at_most_two_ec2_calls(ec2):
    workers = [worker_in("running") for _ in range(30)]
    Worker.objects.update(ip_address=None)
    calls = len(ec2.calls)

    summary = worker_ec2_sync()

    made = ec2.calls[calls:]
    assert made.count("DescribeInstances") == len(made) <= 2, made
    assert summary["ec2_calls"] == len(made)
    assert summary["errors"] == []
    fresh = Worker.objects.filter(pk__in=[w.pk for w in workers])
    assert all(w.last_ec2_sync_at and w.ip_address for w in fresh)  # addresses taken from EC2


def test_sync_survives_a_throttled_describe_and_reports_it(ec2):
    worker = worker_in("running", aws_instance_id=launch_outside())
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])
    ec2.arm("DescribeInstances", "RequestLimitExceeded")  # every attempt, retries included

    summary = worker_ec2_sync()

    assert summary["errors"] and "RequestLimitExceeded" in summary["errors"][0]
    assert status_of(worker) == "running"  # nothing known, nothing changed
    ec2.disarm()
    assert worker_ec2_sync()["errors"] == []
    assert status_of(worker) == "stopped"  # the next pass catches up


# --- EC2 failures through the API ---------------------------------------------------------------


def test_a_throttled_start_past_the_retries_is_502_and_the_worker_stays_stopped(operator_client, sim):
    worker = worker_in("stopped")
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])
    sim.arm("StartInstances", "RequestLimitExceeded", times=settings.EC2_MAX_ATTEMPTS + 1)
    since = len(sim.calls)

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/start")

    assert "RequestLimitExceeded" in assert_problem(response, 502)["detail"]
    assert calls_after(sim, since) == ["StartInstances"] * settings.EC2_MAX_ATTEMPTS  # botocore retried
    assert status_of(worker) == "stopped"
    assert ec2_state(worker.aws_instance_id) == "stopped"
    failure = failed_ec2_calls(resource_id=worker.public_id).get()
    assert (failure.action, failure.metadata["code"]) == ("worker.start", "RequestLimitExceeded")


def test_a_throttle_absorbed_by_the_retry_is_invisible(operator_client, sim):
    worker = worker_in("stopped")
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])
    sim.arm("StartInstances", "RequestLimitExceeded", times=1)
    since = len(sim.calls)

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/start")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "running"
    assert calls_after(sim, since) == ["StartInstances", "StartInstances", "DescribeInstances"]
    assert not failed_ec2_calls().exists()


def test_import_that_ec2_answers_not_found_is_422(operator_client, sim):
    instance_id = launch_outside()
    sim.arm("DescribeInstances", "InvalidInstanceID.NotFound", times=1)

    response = operator_client.post(WORKERS, {"aws_instance_id": instance_id}, format="json")

    assert_problem(response, 422, error_field="aws_instance_id")
    assert not Worker.objects.exists()
    assert failed_ec2_calls(action="worker.import").count() == 1


def test_an_unauthorised_stop_is_502_and_the_worker_stays_running(operator_client, sim):
    worker = worker_in("running")
    sim.arm("StopInstances", "UnauthorizedOperation")
    since = len(sim.calls)

    response = operator_client.post(f"{WORKERS}/{worker.public_id}/stop")

    assert "UnauthorizedOperation" in assert_problem(response, 502)["detail"]
    assert calls_after(sim, since) == ["StopInstances"]  # not retried: retrying cannot help
    assert status_of(worker) == "running"
    assert ec2_state(worker.aws_instance_id) == "running"
    assert failed_ec2_calls(resource_id=worker.public_id, action="worker.stop").count() == 1


def test_a_launch_without_capacity_in_ec2_is_409_and_the_worker_failed(operator_client, sim):
    sim.arm("RunInstances", "InsufficientInstanceCapacity")

    response = operator_client.post(WORKERS, {"name": "no-room", "instance_type": "m5.metal"}, format="json")

    assert "InsufficientInstanceCapacity" in assert_problem(response, 409)["detail"]
    worker = Worker.objects.get(name="no-room")
    assert (worker.status, worker.aws_instance_id) == ("failed", "")
    assert failed_ec2_calls(resource_id=worker.public_id, action="worker.launch").count() == 1
    # It has no instance to start; terminating it clears the record.
    assert_problem(operator_client.post(f"{WORKERS}/{worker.public_id}/start"), 409)
    assert operator_client.delete(f"{WORKERS}/{worker.public_id}").status_code == 204  # nothing left to follow
    assert status_of(worker) == "terminated"


def test_an_ec2_that_hangs_is_502_within_the_timeout(operator_client, sim):
    instance_id = launch_outside()
    sim.arm("DescribeInstances", "timeout", times=settings.EC2_MAX_ATTEMPTS, delay=3)
    assert settings.EC2_TIMEOUT_SECONDS < 3

    started = time.monotonic()
    response = operator_client.post(WORKERS, {"aws_instance_id": instance_id}, format="json")
    elapsed = time.monotonic() - started

    assert "timeout" in assert_problem(response, 502)["detail"].lower()
    assert elapsed < settings.EC2_MAX_ATTEMPTS * settings.EC2_TIMEOUT_SECONDS + 2, elapsed
    assert not Worker.objects.exists()
    assert failed_ec2_calls(action="worker.import").count() == 1


# --- capacity -----------------------------------------------------------------------------------


def test_operators_override_part_of_a_workers_capacity(operator_client, sim):
    worker = worker_in("running")

    response = operator_client.patch(f"{WORKERS}/{worker.public_id}", {"capacity": {"max_nodes": 40, "cpu_cores": 32}},
                                     format="json")

    assert response.status_code == 200, response.content
    assert response.json()["capacity"] == {"cpu_cores": 32, "memory_gb": 192, "storage_gb": 500, "max_nodes": 40}
    event = AuditEvent.objects.get(resource_id=worker.public_id, event_type="worker.capacity_changed")
    assert (event.metadata["before"]["max_nodes"], event.metadata["after"]["max_nodes"]) == (100, 40)


def test_a_capacity_override_must_be_positive(operator_client, sim):
    worker = worker_in("running")

    response = operator_client.patch(f"{WORKERS}/{worker.public_id}", {"capacity": {"max_nodes": 0}}, format="json")

    assert_problem(response, 422, error_field="capacity.max_nodes")
    assert Worker.objects.get(pk=worker.pk).max_nodes == 100


def test_instructors_cannot_override_capacity(instructor_client, sim):
    worker = worker_in("running")

    response = instructor_client.patch(f"{WORKERS}/{worker.public_id}", {"capacity": {"max_nodes": 1}}, format="json")

    assert_problem(response, 403)
    assert Worker.objects.get(pk=worker.pk).max_nodes == 100


# --- worker templates API -----------------------------------------------------------------------


TEMPLATE_BODY = {"name": "metal", "instance_type": "m5zn.metal", "aws_region": "us-east-1", "cpu_cores": 48,
                 "memory_gb": 192, "storage_gb": 500, "max_nodes": 100, "cost_per_hour": "3.9640"}


def test_operators_create_list_show_and_update_worker_templates(operator_client):
    created = operator_client.post(TEMPLATES, TEMPLATE_BODY, format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["id"].startswith("wtpl-")
    assert {k: body[k] for k in TEMPLATE_BODY} == TEMPLATE_BODY
    assert body["license_tier"] == "enterprise"

    listed = operator_client.get(TEMPLATES).json()
    assert (listed["total"], [t["id"] for t in listed["worker_templates"]]) == (1, [body["id"]])
    assert operator_client.get(f"{TEMPLATES}/{body['id']}").json() == body

    updated = operator_client.put(f"{TEMPLATES}/{body['id']}", {"max_nodes": 80, "ami_id": "ami-0abc"}, format="json")

    assert updated.status_code == 200, updated.content
    assert (updated.json()["max_nodes"], updated.json()["ami_id"], updated.json()["name"]) == (80, "ami-0abc", "metal")
    actions = AuditEvent.objects.filter(resource_id=body["id"]).values_list("action", flat=True)
    assert list(actions) == ["worker_template.create", "worker_template.update"]


def test_a_duplicate_template_name_is_409(operator_client):
    first = operator_client.post(TEMPLATES, TEMPLATE_BODY, format="json").json()
    other = operator_client.post(TEMPLATES, {**TEMPLATE_BODY, "name": "other"}, format="json").json()

    assert_problem(operator_client.post(TEMPLATES, TEMPLATE_BODY, format="json"), 409)
    assert_problem(operator_client.put(f"{TEMPLATES}/{other['id']}", {"name": first["name"]}, format="json"), 409)
    assert WorkerTemplate.objects.get(public_id=other["id"]).name == "other"


def test_an_invalid_template_is_422(operator_client):
    response = operator_client.post(TEMPLATES, {**TEMPLATE_BODY, "max_nodes": 0}, format="json")

    assert_problem(response, 422, error_field="max_nodes")


def test_instructors_cannot_see_or_change_worker_templates(instructor_client):
    tpl = template()

    assert_problem(instructor_client.get(TEMPLATES), 403)
    assert_problem(instructor_client.get(f"{TEMPLATES}/{tpl.public_id}"), 403)
    assert_problem(instructor_client.post(TEMPLATES, TEMPLATE_BODY, format="json"), 403)
    assert_problem(instructor_client.put(f"{TEMPLATES}/{tpl.public_id}", {"max_nodes": 1}, format="json"), 403)
    assert WorkerTemplate.objects.get(pk=tpl.pk).max_nodes == 12


# --- placement rules ----------------------------------------------------------------------------


def test_only_running_undrained_workers_with_cml_available_are_placeable(sim):
    placeable = worker_in("running")
    stopped = worker_in("stopped")
    pending = worker_in("pending")
    draining = worker_in("running", draining=True)
    cml_down = worker_in("running")
    cml_unknown = worker_in("running")
    Worker.objects.exclude(pk=cml_unknown.pk).update(cml_service_status="available")
    Worker.objects.filter(pk=cml_down.pk).update(cml_service_status="unavailable")

    assert list(worker_placeable_list()) == [placeable]
    flags = {w.pk: w.is_placeable for w in Worker.objects.all()}
    assert flags == {placeable.pk: True, stopped.pk: False, pending.pk: False, draining.pk: False,
                     cml_down.pk: False, cml_unknown.pk: False}


# --- capacity from EC2's DescribeInstanceTypes ----------------------------------------------------------


@pytest.fixture
def fresh_instance_types():
    """The process's cache of DescribeInstanceTypes answers, emptied before and after."""
    from apps.workers import ec2

    ec2._instance_types.clear()
    yield
    ec2._instance_types.clear()


def test_a_type_not_in_the_table_gets_its_vcpus_and_memory_from_ec2_asked_once(operator_client, sim,
                                                                              fresh_instance_types):
    since = len(sim.calls)
    first = operator_client.post(WORKERS, {"name": "w1", "instance_type": "c5.9xlarge"}, format="json")
    second = operator_client.post(WORKERS, {"name": "w2", "instance_type": "c5.9xlarge"}, format="json")

    assert first.status_code == 201, first.content
    # c5.9xlarge: 36 vCPUs, 72 GiB (EC2's answer); EBS-only: the default storage; 2 GB a node.
    assert first.json()["capacity"] == {"cpu_cores": 36, "memory_gb": 72, "storage_gb": 250, "max_nodes": 36}
    assert second.json()["capacity"] == first.json()["capacity"]
    assert calls_after(sim, since).count("DescribeInstanceTypes") == 1  # cached per region and type


def test_the_override_table_wins_over_ec2(operator_client, sim, fresh_instance_types):
    since = len(sim.calls)
    response = operator_client.post(WORKERS, {"name": "w", "instance_type": "m5.4xlarge"}, format="json")

    assert response.status_code == 201, response.content
    # EC2 says 16 vCPUs, 64 GiB; the table's storage and node count are what the operator set.
    assert response.json()["capacity"] == {"cpu_cores": 16, "memory_gb": 64, "storage_gb": 250, "max_nodes": 30}
    assert "DescribeInstanceTypes" not in calls_after(sim, since)


def test_ec2_unreachable_for_the_type_is_502_saying_to_send_the_capacity(operator_client, sim, fresh_instance_types):
    sim.arm("DescribeInstanceTypes", "RequestLimitExceeded", times=settings.EC2_MAX_ATTEMPTS + 1)

    problem = assert_problem(operator_client.post(WORKERS, {"name": "w", "instance_type": "c5.9xlarge"},
                                                  format="json"), 502)

    assert "c5.9xlarge" in problem["detail"] and "capacity.cpu_cores" in problem["detail"]
    assert not Worker.objects.exists()
    assert failed_ec2_calls(action="worker.instance_type").count() == 1
    capacity = {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 50, "max_nodes": 4}  # given: EC2 is not asked
    sim.arm("DescribeInstanceTypes", "RequestLimitExceeded")
    response = operator_client.post(WORKERS, {"name": "w", "instance_type": "c5.9xlarge", "capacity": capacity},
                                    format="json")
    assert response.status_code == 201, response.content
    assert response.json()["capacity"] == capacity


def test_the_simulator_starts_empty_on_a_state_file_another_moto_wrote(tmp_path, capsys):
    """The EC2 simulator's state file (make run: var/sim/ec2.pickle) is a pickle of moto's backends: only the
    moto version that wrote it reads it back; any other starts empty and says so."""
    import pickle

    from simulators.ec2 import Ec2Simulator

    state = tmp_path / "ec2.pickle"
    state.write_bytes(pickle.dumps({"moto": "0.0.1", "backends": {"ec2": {"123456789012": {"us-east-1": None}}}}))

    assert Ec2Simulator(state_file=state).load_state() is False
    assert "written by moto 0.0.1" in capsys.readouterr().err
