"""The lifecycle engine end to end: bring-up, collection, grading, slot end, archive, idle, expiry, warnings.

Over HTTP to the CML simulator and moto's S3; see engine_support."""

import json
from datetime import timedelta

import pytest
import yaml

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import ConsolePort, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.services import worker_transition
from tests.factories import LabletInstanceFactory, WorkerFactory
from tests.lablets.engine_support import (
    CONSOLE_HOST,
    events,
    fresh,
    labs,
    labs_titled,
    running_worker,
    s3_keys,
    s3_read,
    scheduled,
    two_router_definition,
    wait_for_boot,
)

pytestmark = pytest.mark.django_db

INSTANCES = "/api/lablet-instances"


@pytest.fixture
def worker(cml):
    return running_worker()


@pytest.fixture
def definition():
    return two_router_definition(idle_timeout_minutes=240)  # the idle tests use their own


def running(worker, definition, cml, **kwargs):
    instance = scheduled(worker, definition, **kwargs)
    lifecycle_tick()
    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    return instance


# --- bring-up -----------------------------------------------------------------------------------


def test_it_brings_the_lab_up_within_the_lead_time_and_records_the_consoles(worker, definition, cml):
    instance = scheduled(worker, definition, starts_in=timedelta(minutes=5))

    report = lifecycle_tick()

    instance = fresh(instance)
    assert report["instantiate"] == 1
    assert instance.status == "running"
    assert instance.instantiating_at and instance.running_at
    assert instance.lifecycle_step == "" and instance.attempts == 0 and instance.claimed_until is None
    lab = labs(cml)[instance.cml_lab_id]
    assert lab["title"] == instance.public_id
    assert lab["state"] == "BOOTED" and set(lab["nodes"].values()) == {"BOOTED"}
    r1, r2 = instance.console
    assert r1 | {"node_id": None, "console_key": None, "console_path": None} == {
        "name": "r1-console", "device_name": "router1", "console_type": "serial", "host": CONSOLE_HOST,
        "port": 9000, "device_port": None, "node_id": None, "console_key": None, "console_path": None}
    assert r1["node_id"] and r1["console_key"] and r1["console_path"] == f"/{instance.cml_lab_id}/{r1['node_id']}/0"
    assert (r2["device_name"], r2["console_type"], r2["port"], r2["device_port"]) == ("router2", "telnet", 9001, 23)
    assert sorted(ConsolePort.objects.filter(instance=instance).values_list("port", flat=True)) == [9000, 9001]
    assert events(instance)[-6:] == ["lablet_instance.instantiating", "lablet_instance.progressed",
                                     "lablet_instance.lab_imported", "lablet_instance.progressed",
                                     "lablet_instance.lab_started", "lablet_instance.running"]


def test_it_shows_the_console_details_in_the_api(worker, definition, cml, admin_client):
    instance = running(worker, definition, cml)

    body = admin_client.get(f"{INSTANCES}/{instance.public_id}").json()

    assert body["status"] == "running"
    assert body["cml_lab_id"] == instance.cml_lab_id
    assert [(c["name"], c["host"], c["port"]) for c in body["console"]] == [
        ("r1-console", CONSOLE_HOST, 9000), ("r2-telnet", CONSOLE_HOST, 9001)]
    assert body["lifecycle_step"] == "" and body["termination_reason"] == "" and body["last_error"] == ""


def test_it_does_not_bring_a_lab_up_before_the_lead_time(worker, definition, cml):
    instance = scheduled(worker, definition, starts_in=timedelta(minutes=30))

    lifecycle_tick()

    assert fresh(instance).status == "scheduled"
    assert labs(cml) == {}


def test_it_gives_every_lab_its_own_console_ports(worker, definition, cml):
    first = scheduled(worker, definition)
    second = scheduled(worker, definition)

    lifecycle_tick()

    assert [c["port"] for c in fresh(first).console] == [9000, 9001]
    assert [c["port"] for c in fresh(second).console] == [9002, 9003]
    assert len(labs(cml)) == 2


def test_it_reports_booting_nodes_until_every_node_booted(worker, definition, cml):
    cml.configure(boot_delay=0.6)
    instance = scheduled(worker, definition)

    lifecycle_tick()

    instance = fresh(instance)
    assert instance.status == "instantiating"
    assert instance.lifecycle_step == "nodes booting 0/2"
    assert instance.claimed_until is None and instance.attempts == 0
    cml.configure(boot_delay=0)
    wait_for_boot(cml, instance)
    lifecycle_tick()
    assert fresh(instance).status == "running"
    assert len(labs(cml)) == 1


def test_it_waits_for_a_stopped_worker_and_expires_the_instance_if_it_never_runs(definition, cml):
    worker = worker_transition(worker=WorkerFactory(), to="stopped", actor="tests")
    instance = scheduled(worker, definition)

    lifecycle_tick()

    instance = fresh(instance)
    assert instance.status == "scheduled"
    assert instance.lifecycle_step == f"waiting for worker {worker.public_id} (stopped)"

    lifecycle_tick(now=instance.timeslot_start + timedelta(minutes=15, seconds=1))

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert instance.termination_reason == "expired"
    assert labs(cml) == {}


def test_it_expires_a_pending_reservation_that_was_never_placed(definition, cml):
    instance = LabletInstanceFactory(definition=definition)

    lifecycle_tick(now=instance.timeslot_start + timedelta(minutes=16))

    instance = fresh(instance)
    assert (instance.status, instance.termination_reason) == ("terminated", "expired")
    assert events(instance)[-1] == "lablet_instance.terminated"


def test_it_expires_an_instance_whose_nodes_never_boot_and_removes_its_lab(worker, definition, cml):
    cml.configure(boot_delay=3600)
    instance = scheduled(worker, definition)
    lifecycle_tick()
    assert fresh(instance).status == "instantiating"

    lifecycle_tick(now=fresh(instance).timeslot_start + timedelta(minutes=15))

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert instance.termination_reason == "expired"
    assert labs(cml) == {}
    assert instance.cml_lab_removed_at is not None
    assert not ConsolePort.objects.filter(instance=instance).exists()


# --- collection and grading ---------------------------------------------------------------------


def test_it_collects_the_node_configurations_as_artifacts(worker, definition, cml, admin_client):
    instance = running(worker, definition, cml)

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/start-collection")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "collecting"
    assert [(a["kind"], a["node"]) for a in body["artifacts"]] == [("node_config", "router1"),
                                                                     ("node_config", "router2")]
    assert "hostname router1" in body["artifacts"][0]["content"]
    assert fresh(instance).artifacts == body["artifacts"]
    assert events(instance)[-2:] == ["lablet_instance.collecting", "lablet_instance.collected"]


def test_it_keeps_the_instance_running_when_collection_fails(worker, definition, cml, admin_client):
    instance = running(worker, definition, cml)
    cml.set_faults(down=True)

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/start-collection")

    assert response.status_code == 502, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert fresh(instance).status == "running"
    assert events(instance)[-1] == "lablet_instance.collection_failed"


def grading(worker, definition, cml, client):
    instance = running(worker, definition, cml)
    assert client.post(f"{INSTANCES}/{instance.public_id}/start-collection").status_code == 200
    response = client.post(f"{INSTANCES}/{instance.public_id}/start-grading")
    assert response.json()["status"] == "grading"
    return instance


def test_it_records_a_grading_result(worker, cml, admin_client):
    # A definition that keeps the lab until the slot ends (graded release: tests/lablets/test_graded_release.py).
    definition = two_router_definition(idle_timeout_minutes=240, keep_lab_until_slot_end=True)
    instance = grading(worker, definition, cml, admin_client)
    assert events(instance)[-1] == "lablet_instance.grading"

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/grading-result",
                                 {"score": 8.5, "max_score": 10, "details": {"ospf": "ok"}}, format="json")

    assert response.status_code == 200, response.content
    result = response.json()["grading_result"]
    assert (result["score"], result["max_score"], result["details"]) == (8.5, 10, {"ospf": "ok"})
    assert result["graded_at"] and result["graded_by"]
    assert response.json()["status"] == "grading"
    assert fresh(instance).grading_result == result
    assert events(instance)[-1] == "lablet_instance.graded"


@pytest.mark.parametrize("body,field", [
    ({"score": 11, "max_score": 10}, "score"),
    ({"score": -1, "max_score": 10}, "score"),
    ({"score": 1, "max_score": -10}, "max_score"),
    ({"max_score": 10}, "score"),
    ({"score": "lots", "max_score": 10}, "score"),
])
def test_it_refuses_an_invalid_grading_result(worker, definition, cml, admin_client, body, field):
    instance = grading(worker, definition, cml, admin_client)

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/grading-result", body, format="json")

    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]
    assert fresh(instance).grading_result is None


@pytest.mark.parametrize("state", ["running", "collecting", "terminated"])
def test_it_refuses_a_grading_result_unless_grading(worker, definition, cml, admin_client, state):
    instance = running(worker, definition, cml)
    if state == "collecting":
        admin_client.post(f"{INSTANCES}/{instance.public_id}/start-collection")
    if state == "terminated":
        admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/grading-result",
                                 {"score": 1, "max_score": 2}, format="json")

    assert response.status_code == 409, response.content
    assert state in response.json()["detail"]
    assert "lablet_instance.graded" not in events(instance)


# --- the end of the slot, idle, warnings --------------------------------------------------------


def test_the_end_of_the_slot_stops_archives_and_deletes_the_lab(worker, cml, admin_client):
    definition = two_router_definition(idle_timeout_minutes=240, keep_lab_until_slot_end=True)  # graded, kept
    instance = grading(worker, definition, cml, admin_client)
    admin_client.post(f"{INSTANCES}/{instance.public_id}/grading-result", {"score": 3, "max_score": 4}, format="json")
    lab_id = fresh(instance).cml_lab_id

    report = lifecycle_tick(now=instance.timeslot_end + timedelta(seconds=1))

    instance = fresh(instance)
    assert report["ended"] == 1
    assert instance.status == "terminated"
    assert instance.termination_reason == "timeslot ended"
    assert instance.stopping_at and instance.stopped_at and instance.archived_at and instance.terminated_at
    assert labs(cml) == {}
    assert instance.cml_lab_id == lab_id and instance.cml_lab_removed_at is not None
    assert not ConsolePort.objects.filter(instance=instance).exists()
    assert instance.console == []
    prefix = f"instances/{instance.public_id}/"
    assert instance.archive_key == prefix
    assert s3_keys(prefix) == [prefix + name for name in (
        "artifacts.json", "configs/router1.txt", "configs/router2.txt", "instance.json", "lab.yaml")]
    assert yaml.safe_load(s3_read(prefix + "lab.yaml"))["lab"]["title"] == instance.public_id
    assert json.loads(s3_read(prefix + "artifacts.json")) == instance.artifacts
    summary = json.loads(s3_read(prefix + "instance.json"))
    assert summary["grading_result"]["score"] == 3 and summary["termination_reason"] == "timeslot ended"
    assert b"hostname router2" in s3_read(prefix + "configs/router2.txt")
    assert events(instance)[-5:] == ["lablet_instance.stopping", "lablet_instance.stopped",
                                     "lablet_instance.archived", "lablet_instance.lab_deleted",
                                     "lablet_instance.terminated"]


def test_an_idle_lab_is_torn_down(worker, cml, admin_client):
    instance = running(worker, two_router_definition(idle_timeout_minutes=30), cml)
    response = admin_client.post(f"/api/lablet-instances/{instance.public_id}/activity")
    assert response.status_code == 204
    assert fresh(instance).last_activity_at is not None
    LabletInstance.objects.filter(pk=instance.pk).update(last_activity_at=instance.running_at)

    lifecycle_tick(now=instance.running_at + timedelta(minutes=29))
    assert fresh(instance).status == "running"
    lifecycle_tick(now=instance.running_at + timedelta(minutes=30, seconds=1))

    instance = fresh(instance)
    assert (instance.status, instance.termination_reason) == ("terminated", "idle")
    assert labs(cml) == {}


def test_a_lab_that_never_reported_activity_runs_to_the_end_of_its_slot(worker, cml):
    instance = running(worker, two_router_definition(idle_timeout_minutes=30), cml, minutes=120)

    lifecycle_tick(now=instance.running_at + timedelta(minutes=90))

    assert fresh(instance).status == "running"


def test_activity_is_refused_for_a_lab_that_is_not_running(admin_client):
    instance = LabletInstanceFactory()
    response = admin_client.post(f"/api/lablet-instances/{instance.public_id}/activity")
    assert response.status_code == 409
    assert response["Content-Type"].startswith("application/problem+json")


def test_activity_pushes_the_idle_timeout_out(worker, cml):
    instance = running(worker, two_router_definition(idle_timeout_minutes=30), cml)
    LabletInstance.objects.filter(pk=instance.pk).update(last_activity_at=instance.running_at + timedelta(minutes=20))

    lifecycle_tick(now=instance.running_at + timedelta(minutes=31))

    assert fresh(instance).status == "running"


def test_it_warns_once_before_the_slot_ends(worker, definition, cml):
    instance = running(worker, definition, cml, minutes=60)
    end = instance.timeslot_end

    lifecycle_tick(now=end - timedelta(minutes=11))
    assert "lablet_instance.expiring" not in events(instance)
    lifecycle_tick(now=end - timedelta(minutes=9))
    lifecycle_tick(now=end - timedelta(minutes=8))

    assert events(instance).count("lablet_instance.expiring") == 1
    assert fresh(instance).expiring_notified_at == end - timedelta(minutes=9)
    assert fresh(instance).status == "running"


def test_a_warning_goes_out_again_for_a_new_end(worker, definition, cml):
    instance = running(worker, definition, cml, minutes=60)
    lifecycle_tick(now=instance.timeslot_end - timedelta(minutes=5))
    LabletInstance.objects.filter(pk=instance.pk).update(expiring_notified_at=None)  # what an extension does

    lifecycle_tick(now=instance.timeslot_end - timedelta(minutes=4))

    assert events(instance).count("lablet_instance.expiring") == 2


def test_a_tick_with_nothing_due_does_nothing(worker, definition, cml):
    instance = running(worker, definition, cml)
    before = events(instance)

    assert lifecycle_tick() == {}
    assert events(instance) == before


def test_the_scheduled_task_runs_the_tick(worker, definition, cml):
    from apps.lablets.tasks import advance_instance
    from apps.lablets.tasks import lifecycle_tick as task

    instance = scheduled(worker, definition)
    other = scheduled(worker, definition)
    assert advance_instance(other.pk) == "running"
    task()

    assert fresh(instance).status == fresh(other).status == "running"


def test_a_lab_from_a_stale_transition_is_left_to_the_right_owner(worker, definition, cml):
    """Instances put in a state by hand (admin, seed data) are still taken through the teardown."""
    instance = running(worker, definition, cml)
    lablet_instance_transition(instance=instance, to="stopping", actor="tests")

    lifecycle_tick()

    assert fresh(instance).status == "terminated"
    assert fresh(instance).termination_reason == ""
    assert labs(cml) == {}


def test_an_instance_that_ran_keeps_its_lab_id_after_termination(worker, definition, cml, admin_client):
    instance = running(worker, definition, cml)

    admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    assert fresh(instance).cml_lab_id == instance.cml_lab_id
    assert labs_titled(cml, instance.public_id) == []
