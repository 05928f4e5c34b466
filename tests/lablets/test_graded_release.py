"""Graded release (docs/lifecycle.md#graded-release): an instance whose grading is done releases its lab and
its capacity (the archive kept) unless its definition keeps the lab until the slot ends.

Over HTTP to the CML simulator and moto's S3; see engine_support."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import InstanceStatus, LabletDefinition
from apps.lablets.services import lablet_instance_create
from apps.lablets.services.instances import lablet_instance_record_grading
from apps.workers import ledger
from tests.lablets.engine_support import events, fresh, labs, running_worker, s3_keys, scheduled, two_router_definition

pytestmark = pytest.mark.django_db

INSTANCES = "/api/lablet-instances"
DEFINITIONS = "/api/lablet-definitions"


def graded(worker, definition, cml, client, *, score=3):
    """An instance brought up by the engine, collected, put to grading and given a result over the API."""
    instance = scheduled(worker, definition)
    lifecycle_tick()
    assert fresh(instance).status == "running", fresh(instance).last_error
    assert client.post(f"{INSTANCES}/{instance.public_id}/start-collection").status_code == 200
    assert client.post(f"{INSTANCES}/{instance.public_id}/start-grading").json()["status"] == "grading"
    response = client.post(f"{INSTANCES}/{instance.public_id}/grading-result", {"score": score, "max_score": 4},
                           format="json")
    assert response.status_code == 200, response.content
    return instance, response.json()


def test_a_graded_instance_frees_its_capacity(cml, admin_client, django_capture_on_commit_callbacks):
    # A worker with room for one such instance: the next one overlapping its slot fits only once it is released.
    worker = running_worker(cpu_cores=4)
    definition = two_router_definition(cpu_cores=4, idle_timeout_minutes=240)
    start = timezone.now() + timedelta(minutes=30)  # well inside the slot of the instance graded below
    with django_capture_on_commit_callbacks(execute=True):
        instance, answer = graded(worker, definition, cml, admin_client)
        assert answer["status"] == "stopping" and answer["grading_result"]["score"] == 3
        assert ledger.usage_at([worker.pk], start)[worker.pk]["instance"] == 1  # held until its lab is torn down
    # At the commit the teardown was handed to the q cluster (run inline here: tests/lablets/conftest.py).

    instance = fresh(instance)
    assert (instance.status, instance.termination_reason) == ("terminated", "graded")
    assert instance.terminated_at < instance.timeslot_end
    prefix = f"instances/{instance.public_id}/"
    assert instance.archive_key == prefix and prefix + "instance.json" in s3_keys(prefix)  # the archive is kept
    assert labs(cml) == {}
    assert "lablet_instance.graded" in events(instance) and events(instance)[-1] == "lablet_instance.terminated"
    assert ledger.usage_at([worker.pk], start) == {}
    after = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="next-student",
                                   timeslot_start=start)
    assert (after.status, after.worker_id) == (InstanceStatus.SCHEDULED, worker.pk)


def test_a_definition_that_keeps_the_lab_keeps_it_until_the_slot_ends(cml, admin_client):
    worker = running_worker()
    definition = two_router_definition(keep_lab_until_slot_end=True, idle_timeout_minutes=240)
    instance, answer = graded(worker, definition, cml, admin_client)

    assert answer["status"] == "grading"
    assert lifecycle_tick().get("graded") is None and fresh(instance).status == "grading"
    report = lifecycle_tick(now=instance.timeslot_end + timedelta(seconds=1))
    assert report["ended"] == 1 and fresh(instance).termination_reason == "timeslot ended"


def test_the_tick_releases_a_graded_instance_whose_definition_stopped_keeping_the_lab(cml, admin_client):
    worker = running_worker()
    definition = two_router_definition(keep_lab_until_slot_end=True, idle_timeout_minutes=240)
    instance, _ = graded(worker, definition, cml, admin_client)
    LabletDefinition.objects.filter(pk=definition.pk).update(keep_lab_until_slot_end=False)

    report = lifecycle_tick()

    assert report["graded"] == 1
    assert (fresh(instance).status, fresh(instance).termination_reason) == ("terminated", "graded")


def test_an_instance_in_grading_is_left_alone_until_its_result_comes(cml, admin_client):
    worker = running_worker()
    instance = scheduled(worker, two_router_definition(idle_timeout_minutes=240))
    lifecycle_tick()
    admin_client.post(f"{INSTANCES}/{instance.public_id}/start-collection")
    admin_client.post(f"{INSTANCES}/{instance.public_id}/start-grading")

    assert lifecycle_tick().get("graded") is None and fresh(instance).status == "grading"
    lablet_instance_record_grading(instance=fresh(instance), actor="tests", score=1, max_score=1)
    assert (fresh(instance).status, fresh(instance).termination_reason) == ("stopping", "graded")


def test_the_definitions_api_and_page_carry_the_setting(admin_client, admin_user):
    from tests.lablets.test_api import definition_body

    body = definition_body(name="kept-lab")
    body["lifecycle"] = {**body["lifecycle"], "keep_lab_until_slot_end": True}
    created = admin_client.post(DEFINITIONS, body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["lifecycle"]["keep_lab_until_slot_end"] is True
    definition = LabletDefinition.objects.get(public_id=created.json()["id"])
    assert definition.keep_lab_until_slot_end is True

    url = f"{DEFINITIONS}/{definition.public_id}"
    changed = admin_client.put(url, {"lifecycle": {"keep_lab_until_slot_end": False}}, format="json")
    assert changed.status_code == 200 and changed.json()["lifecycle"]["keep_lab_until_slot_end"] is False

    from django.test import Client

    browser = Client()
    browser.force_login(admin_user)
    page = browser.get(f"/dashboard/definitions/{definition.public_id}/").content.decode()
    assert "torn down at once" in page
    form = browser.get(f"/dashboard/definitions/{definition.public_id}/edit/").content.decode()
    assert 'name="keep_lab_until_slot_end"' in form
