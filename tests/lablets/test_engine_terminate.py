"""Terminate from every state, failures retried then given up, labs left behind cleaned up, claims, ports."""

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.engine import lifecycle_tick
from apps.lablets.services.lease import lease_claim
from apps.lablets.models import ConsolePort, LabletInstance
from apps.lablets.services import lablet_instance_create, lablet_instance_transition
from apps.lablets.services.ports import console_ports_allocate, console_ports_release
from apps.workers.cml import cml_lab_import
from apps.workers.services import worker_transition
from apps.core.errors import Conflict
from tests.factories import LabletInstanceFactory
from tests.lablets.engine_support import (
    TWO_ROUTERS,
    events,
    fresh,
    labs,
    labs_titled,
    running_worker,
    s3_keys,
    scheduled,
    two_router_definition,
)

pytestmark = pytest.mark.django_db

INSTANCES = "/api/lablet-instances"
MAX = settings.LIFECYCLE_MAX_ATTEMPTS


@pytest.fixture
def worker(cml):
    return running_worker()


@pytest.fixture
def definition():
    return two_router_definition(idle_timeout_minutes=240)


def in_state(state, worker, definition, cml, client):
    """An instance really in `state`: the engine and the API take it there (teardown states by hand, with
    its lab still on CML, as a process that died after the transition would leave it)."""
    if state == "pending":
        return LabletInstanceFactory(definition=definition)
    instance = scheduled(worker, definition)
    if state == "scheduled":
        return instance
    if state == "instantiating":
        cml.configure(boot_delay=3600)
    lifecycle_tick()
    if state in ("collecting", "grading"):
        client.post(f"{INSTANCES}/{instance.public_id}/start-collection")
    if state == "grading":
        client.post(f"{INSTANCES}/{instance.public_id}/start-grading")
    for step in {"stopping": ["stopping"], "stopped": ["stopping", "stopped"],
                 "archived": ["stopping", "stopped", "archived"]}.get(state, []):
        lablet_instance_transition(instance=instance, to=step, actor="tests")
    instance = fresh(instance)
    assert instance.status == state
    return instance


STATES = ["pending", "scheduled", "instantiating", "running", "collecting", "grading", "stopping", "stopped",
          "archived"]


@pytest.mark.parametrize("state", STATES)
def test_terminate_from_any_state_leaves_no_lab_behind(state, worker, definition, cml, admin_client):
    instance = in_state(state, worker, definition, cml, admin_client)
    had_lab = bool(instance.cml_lab_id)
    assert had_lab == (state not in ("pending", "scheduled"))

    response = admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "terminated"
    assert body["termination_reason"] == "terminate requested"
    assert labs(cml) == {}
    assert not ConsolePort.objects.filter(instance=instance).exists()
    instance = fresh(instance)
    if had_lab:
        assert instance.cml_lab_removed_at is not None
        if state != "archived":  # put there by hand: its archive step never ran
            assert body["archive_key"] == f"instances/{instance.public_id}/"
            assert f"instances/{instance.public_id}/instance.json" in s3_keys(body["archive_key"])
    else:
        assert events(instance)[-1] == "lablet_instance.terminated"
        assert body["archive_key"] == ""
    assert admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate").status_code == 409


def test_terminate_while_cml_is_down_answers_stopping_and_the_tick_finishes(worker, definition, cml, admin_client):
    instance = in_state("running", worker, definition, cml, admin_client)
    cml.set_faults(down=True)

    body = admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate").json()

    assert body["status"] == "stopping"
    assert "503" in body["last_error"] or "unavailable" in body["last_error"]
    assert body["lifecycle_step"].startswith("stop failed (attempt 1/")
    cml.clear_faults()
    lifecycle_tick()  # the retry time has not come yet
    assert fresh(instance).status == "stopping"

    lifecycle_tick(now=timezone.now() + timedelta(seconds=settings.LIFECYCLE_RETRY_BASE_SECONDS + 1))

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert instance.last_error == "" and instance.attempts == 0
    assert labs(cml) == {}


def test_a_failing_instantiation_is_retried_with_backoff_then_terminated(worker, definition, cml):
    cml.set_faults(down=True)
    instance = scheduled(worker, definition)
    now = timezone.now()

    lifecycle_tick(now=now)
    first = fresh(instance)
    assert (first.status, first.attempts) == ("instantiating", 1)
    assert first.next_attempt_at == now + timedelta(seconds=settings.LIFECYCLE_RETRY_BASE_SECONDS)
    assert first.last_error and first.claimed_until is None
    lifecycle_tick(now=now + timedelta(seconds=10))
    assert fresh(instance).attempts == 1  # backing off

    for attempt in range(2, MAX + 1):
        now = fresh(instance).next_attempt_at or now
        lifecycle_tick(now=now)
        retried = fresh(instance)
        if attempt < MAX:  # failed again, backing off
            assert (retried.status, retried.attempts) == ("instantiating", attempt)

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert instance.termination_reason.startswith("failed: instantiation: ")
    failures = [e for e in AuditEvent.objects.filter(resource_id=instance.public_id,
                                                     event_type="lablet_instance.step_failed").order_by("id")
                if e.metadata["step"] == "instantiate"]
    assert len(failures) == MAX and not any(e.success for e in failures)
    assert [e.metadata["gave_up"] for e in failures] == [False] * (MAX - 1) + [True]
    assert instance.cml_lab_removed_at is None  # CML never answered: the cleanup owes it a look

    cml.clear_faults()
    lifecycle_tick(now=now + timedelta(hours=2))
    assert fresh(instance).cml_lab_removed_at is not None
    assert events(instance)[-1] == "lablet_instance.lab_deleted"


def test_a_lab_that_cannot_start_is_retried_then_removed(worker, definition, cml):
    cml.configure(max_nodes=1)  # CML refuses to start two nodes
    instance = scheduled(worker, definition)
    now = timezone.now()

    for _ in range(MAX):
        lifecycle_tick(now=now)
        now = (fresh(instance).next_attempt_at or now) + timedelta(seconds=1)

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert "node capacity" in instance.termination_reason
    assert labs(cml) == {}  # imported once, adopted on each retry, deleted at the end
    assert events(instance).count("lablet_instance.lab_imported") == 1
    assert events(instance).count("lablet_instance.lab_adopted") == 0
    assert instance.cml_lab_removed_at is not None


def test_it_recovers_when_cml_answers_again_before_the_attempts_run_out(worker, definition, cml):
    cml.set_faults(down=True)
    instance = scheduled(worker, definition)
    lifecycle_tick()
    cml.clear_faults()

    lifecycle_tick(now=fresh(instance).next_attempt_at)

    instance = fresh(instance)
    assert instance.status == "running"
    assert (instance.attempts, instance.last_error, instance.next_attempt_at) == (0, "", None)
    assert len(labs(cml)) == 1


def test_it_adopts_a_lab_imported_by_a_step_that_never_recorded_it(worker, definition, cml):
    instance = scheduled(worker, definition)
    lablet_instance_transition(instance=instance, to="instantiating", actor="tests")  # the step died here...
    lab_id = cml_lab_import(url=cml.url, username="admin", password="sim-password", topology_yaml=TWO_ROUTERS,
                            title=instance.public_id)  # ...after its import reached CML

    lifecycle_tick()

    instance = fresh(instance)
    assert instance.status == "running"
    assert instance.cml_lab_id == lab_id
    assert labs_titled(cml, instance.public_id) == [lab_id]
    assert "lablet_instance.lab_adopted" in events(instance)


def test_the_tick_deletes_the_lab_of_a_terminated_instance(worker, definition, cml):
    instance = in_state("running", worker, definition, cml, None)
    lablet_instance_transition(instance=instance, to="terminated", actor="tests")  # a teardown that never ran
    assert len(labs(cml)) == 1

    lifecycle_tick()

    assert labs(cml) == {}
    assert fresh(instance).cml_lab_removed_at is not None


def test_the_cleanup_waits_for_a_stopped_worker_and_forgets_a_terminated_one(worker, definition, cml):
    instance = in_state("running", worker, definition, cml, None)
    lablet_instance_transition(instance=instance, to="terminated", actor="tests")
    worker_transition(worker=worker, to="stopped", actor="tests")

    lifecycle_tick()
    assert fresh(instance).cml_lab_removed_at is None
    worker_transition(worker=worker, to="terminated", actor="tests")
    lifecycle_tick()

    assert fresh(instance).cml_lab_removed_at is not None


def test_a_claim_is_taken_once(worker, definition, cml):
    instance = scheduled(worker, definition)
    lablet_instance_transition(instance=instance, to="instantiating", actor="tests")
    now = timezone.now()

    first = lease_claim(instance.pk, status="instantiating", now=now, actor="a")
    second = lease_claim(instance.pk, status="instantiating", now=now, actor="b")

    assert first is not None and second is None
    assert lifecycle_tick(now=now) == {}  # held: nothing to do
    assert lease_claim(instance.pk, status="instantiating", now=first.until + timedelta(seconds=1), actor="c")


def test_a_terminate_during_a_step_leaves_the_teardown_to_the_holder_and_the_tick(worker, definition, cml,
                                                                                 admin_client):
    instance = scheduled(worker, definition)
    lablet_instance_transition(instance=instance, to="instantiating", actor="tests")
    step = lease_claim(instance.pk, status="instantiating", now=timezone.now(), actor="other-cluster")

    body = admin_client.post(f"{INSTANCES}/{instance.public_id}/terminate").json()

    assert body["status"] == "stopping"
    from apps.lablets.engine.instantiate import advance

    assert advance(step) == "stale"  # its import is recorded, its RUNNING refused
    assert len(labs(cml)) == 1
    lifecycle_tick()
    assert fresh(instance).status == "terminated"
    assert labs(cml) == {}


# --- console ports ------------------------------------------------------------------------------


def test_console_ports_are_the_lowest_free_ones_and_come_back(worker, definition, settings):
    settings.CONSOLE_PORT_MIN, settings.CONSOLE_PORT_MAX = 9100, 9104
    a, b, c = (scheduled(worker, definition) for _ in range(3))

    assert console_ports_allocate(instance=a) == [{"name": "r1-console", "port": 9100},
                                                  {"name": "r2-telnet", "port": 9101}]
    assert console_ports_allocate(instance=a) == console_ports_allocate(instance=a)  # idempotent
    assert [p["port"] for p in console_ports_allocate(instance=b)] == [9102, 9103]
    with pytest.raises(Conflict):
        console_ports_allocate(instance=c)
    assert console_ports_release(instance=a) == 2
    assert [p["port"] for p in console_ports_allocate(instance=c)] == [9100, 9101]


def test_console_ports_are_per_worker(definition, cml, settings):
    settings.CONSOLE_HOST = ""  # each worker reached at its own address (shared console host: tests/lablets/test_patty.py)
    one, two = running_worker(), running_worker()
    assert console_ports_allocate(instance=scheduled(one, definition))[0]["port"] == 9000
    assert console_ports_allocate(instance=scheduled(two, definition))[0]["port"] == 9000


# --- capacity freed -----------------------------------------------------------------------------


def test_a_waiting_reservation_is_placed_as_soon_as_a_lab_ends(cml, admin_client):
    definition = two_router_definition(idle_timeout_minutes=240, cpu_cores=4)
    worker = running_worker(cpu_cores=4)
    first = scheduled(worker, definition, starts_in=timedelta(minutes=2), minutes=60)
    waiting = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="late-student",
                                     timeslot_start=first.timeslot_start, timeslot_end=first.timeslot_end)
    assert waiting.status == "pending"

    admin_client.post(f"{INSTANCES}/{first.public_id}/terminate")

    waiting = fresh(waiting)
    assert waiting.status == "scheduled" and waiting.worker_id == worker.pk
    lifecycle_tick()
    assert fresh(waiting).status == "running"


def test_the_tick_keeps_going_past_a_slow_cml(worker, definition, cml, settings):
    settings.LIFECYCLE_TICK_BUDGET_SECONDS = 0.0
    scheduled(worker, definition)
    scheduled(worker, definition)
    started = time.monotonic()

    report = lifecycle_tick()

    assert report == {"deferred": 2}
    assert time.monotonic() - started < 5
    assert LabletInstance.objects.filter(status="scheduled").count() == 2
