"""An instantiation's progress (importing, starting, nodes booting n/m): stored on the instance and journalled
as `lablet_instance.progressed`, one event per change, through the CML simulator (see engine_support)."""

import pytest

from apps.audit.models import AuditEvent
from apps.lablets.engine import lifecycle_tick
from apps.lablets.services.instances import lablet_instance_record_progress
from tests.factories import instance_in
from tests.lablets.engine_support import fresh, running_worker, scheduled, two_router_definition, wait_for_boot

pytestmark = pytest.mark.django_db


def progress(instance) -> list[dict]:
    return [{key: event.metadata[key] for key in ("step", "text", "nodes_booted", "nodes_total")}
            for event in AuditEvent.objects.filter(resource_id=instance.public_id,
                                                   event_type="lablet_instance.progressed").order_by("id")]


def test_an_instantiation_records_its_steps_in_order_and_each_change_once(cml):
    cml.configure(boot_delay=0.6)
    instance = scheduled(running_worker(), two_router_definition())

    lifecycle_tick()
    lifecycle_tick()  # nodes still booting: the same 0/2 is not journalled again

    assert fresh(instance).lifecycle_step == "nodes booting 0/2"
    assert progress(instance) == [
        {"step": "importing", "text": "importing the lab into CML", "nodes_booted": None, "nodes_total": None},
        {"step": "starting", "text": "starting the lab", "nodes_booted": None, "nodes_total": None},
        {"step": "booting", "text": "nodes booting 0/2", "nodes_booted": 0, "nodes_total": 2},
    ]
    event_types = list(AuditEvent.objects.filter(resource_id=instance.public_id).order_by("id")
                       .values_list("event_type", flat=True))
    assert event_types[event_types.index("lablet_instance.instantiating"):] == [
        "lablet_instance.instantiating", "lablet_instance.progressed", "lablet_instance.lab_imported",
        "lablet_instance.progressed", "lablet_instance.lab_started", "lablet_instance.progressed"]
    progressed = AuditEvent.objects.filter(resource_id=instance.public_id, event_type="lablet_instance.progressed")
    assert {event.resource_type for event in progressed} == {"lablet_instance"}  # the SSE lablet_instance_status
    assert all(event.metadata["worker_id"] == instance.worker.public_id for event in progressed)

    cml.configure(boot_delay=0)
    wait_for_boot(cml, instance)
    lifecycle_tick()
    instance = fresh(instance)
    assert instance.status == "running" and instance.lifecycle_step == ""
    assert len(progress(instance)) == 3  # all booted: straight to running, no "2/2"


def test_a_new_count_of_booted_nodes_is_a_change_and_a_repeat_is_not(cml):
    instance = instance_in("instantiating")

    def record(booted):
        return lablet_instance_record_progress(instance=instance, step="booting", actor="tests",
                                               nodes_booted=booted, nodes_total=5)

    assert [record(1), record(1), record(3), record(3), record(5)] == [True, False, True, False, True]
    assert [entry["text"] for entry in progress(instance)] == ["nodes booting 1/5", "nodes booting 3/5",
                                                               "nodes booting 5/5"]
    assert fresh(instance).nodes_booting == (5, 5)


def test_progress_is_only_recorded_while_instantiating_and_while_the_engine_holds_its_claim(cml):
    running = instance_in("running")
    assert lablet_instance_record_progress(instance=running, step="starting", actor="tests") is False
    assert fresh(running).lifecycle_step == "" and progress(running) == []

    instantiating = instance_in("instantiating")
    lost = lablet_instance_record_progress(instance=instantiating, step="importing", actor="tests",
                                           claimed_until=fresh(instantiating).updated_at)  # not its claim
    assert lost is False and progress(instantiating) == []
    with pytest.raises(ValueError):
        lablet_instance_record_progress(instance=instantiating, step="dancing", actor="tests")


def test_a_failed_step_tells_the_pages_what_the_instance_shows(cml):
    cml.set_faults(down=True)  # CML answers 503: the step fails and is retried later
    instance = scheduled(running_worker(), two_router_definition())

    lifecycle_tick()

    instance = fresh(instance)
    failed = AuditEvent.objects.get(resource_id=instance.public_id, event_type="lablet_instance.step_failed")
    assert failed.metadata["step"] == "instantiate"
    assert failed.metadata["text"] == instance.lifecycle_step
    assert instance.lifecycle_step.startswith("instantiate failed (attempt 1/")
