"""Workers' power by demand (apps.fleet.power): idle workers stopped, stopped workers started ahead of booked
slots and for session pools whose queue waits; a worker serving sessions is never stopped under them.

No mocks: stops and starts go through boto3 over HTTP to moto behind the fault-injecting simulator
(tests/conftest.py). Time is moved forward by passing `now` to the services, never by patching clocks."""

import importlib
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.fleet.power import worker_cost_tick, workers_start_for_demand, workers_stop_idle
from apps.lablets.models import LabletInstance
from apps.sessions.models import SessionLab
from apps.sessions.selectors import Principal
from apps.sessions.services.queue import session_create, session_end
from apps.sessions.services.transitions import session_lab_transition
from apps.workers.models import WorkerRunPeriod
from apps.workers.services import worker_drain
from tests.workers.test_cost import (  # noqa: F401 (sim: a fixture)
    RUNNING_PATH, booking, ec2_state, later, sim, status_of, worker_in)

pytestmark = pytest.mark.django_db


# --- idle stop ------------------------------------------------------------------------------------


def test_a_worker_idle_past_the_setting_is_stopped_in_ec2_and_audited_as_idle(sim):
    worker = worker_in("running")

    stopped = workers_stop_idle(now=later(settings.WORKER_IDLE_STOP_MINUTES + 1))

    assert stopped == [worker.public_id]
    assert status_of(worker) == "stopped"
    assert ec2_state(worker.aws_instance_id) == "stopped"
    decision = AuditEvent.objects.get(resource_id=worker.public_id, event_type="worker.idle_stop")
    assert (decision.actor, decision.metadata["reason"]) == ("system", "idle")
    transitions = AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.transition")
    assert [(e.metadata["from"], e.metadata["to"]) for e in transitions][-2:] == [
        ("running", "stopping"), ("stopping", "stopped")]
    assert WorkerRunPeriod.objects.get(worker=worker).ended_at is not None


def test_a_worker_idle_for_less_than_the_setting_keeps_running(sim):
    worker = worker_in("running")

    assert workers_stop_idle(now=later(settings.WORKER_IDLE_STOP_MINUTES - 1)) == []
    assert status_of(worker) == "running"


def test_a_worker_hosting_a_running_lab_is_not_stopped(sim):
    worker = worker_in("running")
    booking(worker, start=later(-30), path=RUNNING_PATH)

    assert workers_stop_idle(now=later(24 * 60)) == []
    assert status_of(worker) == "running"
    assert ec2_state(worker.aws_instance_id) == "running"


def test_a_worker_booked_soon_keeps_running_and_one_booked_far_ahead_is_stopped(sim):
    soon, far = worker_in("running"), worker_in("running")
    now = later(settings.WORKER_IDLE_STOP_MINUTES + 1)
    booking(soon, start=now + timedelta(minutes=settings.LIFECYCLE_LEAD_MINUTES + 5))
    booking(far, start=now + timedelta(hours=6))

    assert workers_stop_idle(now=now) == [far.public_id]
    assert (status_of(soon), status_of(far)) == ("running", "stopped")


def test_a_worker_whose_lab_stopped_recently_counts_idle_from_then(sim):
    worker = worker_in("running")
    instance = booking(worker, start=later(-120), path=(*RUNNING_PATH, "terminated"))
    LabletInstance.objects.filter(pk=instance.pk).update(terminated_at=later(20))
    idle = settings.WORKER_IDLE_STOP_MINUTES

    assert workers_stop_idle(now=later(idle + 1)) == []  # only idle - 19 minutes since the lab ended
    assert workers_stop_idle(now=later(20 + idle + 1)) == [worker.public_id]


def test_a_worker_with_a_lab_still_to_tear_down_is_not_stopped(sim):
    worker = worker_in("running")
    instance = booking(worker, start=later(-180), path=(*RUNNING_PATH, "stopping", "stopped"))
    LabletInstance.objects.filter(pk=instance.pk).update(stopped_at=later(-120))  # archive still to come

    assert workers_stop_idle(now=later(24 * 60)) == []


def test_a_draining_worker_with_live_instances_keeps_running_even_if_booked_far_ahead(sim):
    busy, empty = worker_in("running"), worker_in("running")
    booking(busy, start=later(24 * 60))
    worker_drain(worker=busy, actor="tests")
    worker_drain(worker=empty, actor="tests")

    assert workers_stop_idle(now=later(settings.WORKER_IDLE_STOP_MINUTES + 1)) == [empty.public_id]
    assert status_of(busy) == "running"


def test_an_idle_stop_setting_of_zero_never_stops(sim, settings):
    settings.WORKER_IDLE_STOP_MINUTES = 0
    worker = worker_in("running")

    assert workers_stop_idle(now=later(7 * 24 * 60)) == []
    assert status_of(worker) == "running"
    assert not AuditEvent.objects.filter(event_type="worker.idle_stop").exists()


def test_a_worker_without_an_ec2_instance_is_left_alone(sim):
    worker = worker_in("running", aws_instance_id="")

    assert workers_stop_idle(now=later(24 * 60)) == []
    assert status_of(worker) == "running"


def test_a_failed_ec2_stop_is_logged_and_the_job_goes_on_to_the_next_worker(sim, caplog):
    first, second = worker_in("running"), worker_in("running")
    sim.arm("StopInstances", "UnauthorizedOperation", times=1)

    stopped = workers_stop_idle(now=later(settings.WORKER_IDLE_STOP_MINUTES + 1))

    assert stopped == [second.public_id]
    assert (status_of(first), status_of(second)) == ("running", "stopped")
    assert AuditEvent.objects.filter(resource_id=first.public_id, event_type="worker.ec2_failed").exists()
    assert f"could not stop worker {first.public_id}" in caplog.text


# --- start ahead of demand ------------------------------------------------------------------------


def test_a_stopped_worker_is_started_ahead_of_a_scheduled_lab(sim):
    due, early = worker_in("stopped"), worker_in("stopped")
    ahead = settings.LIFECYCLE_LEAD_MINUTES + settings.WORKER_BOOT_MINUTES
    instance = booking(due, start=later(ahead - 2))
    booking(early, start=later(ahead + 60))

    started = workers_start_for_demand()

    assert started == [due.public_id]
    assert (status_of(due), status_of(early)) == ("running", "stopped")
    assert ec2_state(due.aws_instance_id) == "running"
    decision = AuditEvent.objects.get(resource_id=due.public_id, event_type="worker.demand_start")
    assert (decision.metadata["reason"], decision.metadata["instance_id"]) == ("demand", instance.public_id)
    assert WorkerRunPeriod.objects.filter(worker=due, ended_at__isnull=True).count() == 1
    assert workers_start_for_demand(now=later(ahead + 59)) == [early.public_id]


def test_only_scheduled_labs_make_demand(sim):
    worker = worker_in("stopped")
    booking(worker, start=later(5), path=("terminated",))
    booking(worker, start=later(5), path=())  # pending: not placed yet

    assert workers_start_for_demand() == []


def test_the_boot_time_setting_moves_the_start_earlier(sim, settings):
    worker = worker_in("stopped")
    booking(worker, start=later(settings.LIFECYCLE_LEAD_MINUTES + 40))

    assert workers_start_for_demand() == []
    settings.WORKER_BOOT_MINUTES = 45
    assert workers_start_for_demand() == [worker.public_id]


def test_the_cost_tick_starts_and_stops_and_survives_ec2_failures(sim):
    idle, wanted = worker_in("running"), worker_in("stopped")
    booking(wanted, start=later(settings.LIFECYCLE_LEAD_MINUTES))
    sim.arm("StartInstances", "UnauthorizedOperation", times=1)

    summary = worker_cost_tick(now=later(settings.WORKER_IDLE_STOP_MINUTES + 1))

    assert summary == {"started": [], "stopped": [idle.public_id]}
    assert status_of(wanted) == "stopped"
    assert worker_cost_tick()["started"] == [wanted.public_id]  # the next tick tries again


def test_the_worker_cost_schedule_runs_the_task(sim):
    spec = settings.Q_SCHEDULES["worker_cost"]
    module, name = spec["func"].rsplit(".", 1)
    task = getattr(importlib.import_module(module), name)
    worker_in("running")

    assert (spec["schedule_type"], spec["minutes"]) == ("I", 1)
    assert task() == {"started": [], "stopped": []}  # just started: not idle yet


# --- remote-lab sessions ----------------------------------------------------------------------------

ANONYMOUS = Principal(user_id=None, actor="anonymous@127.0.0.1")


def pool_worker(state: str, pool: str = "default"):
    return worker_in(state, session_pool=pool, cml_service_status="available", license_status="registered")


def test_a_session_pool_worker_is_not_stopped_while_a_session_is_active(sim):
    worker = pool_worker("running")
    session = session_create(principal=ANONYMOUS, pool_name="default")
    assert (session.status, session.worker_id) == ("active", worker.pk)

    assert workers_stop_idle(now=later(24 * 60)) == []
    assert status_of(worker) == "running"
    assert not AuditEvent.objects.filter(event_type="worker.idle_stop").exists()

    session_end(session_id=session.pk, principal=ANONYMOUS)  # idle from the session's end on
    idle = settings.WORKER_IDLE_STOP_MINUTES
    assert workers_stop_idle(now=later(idle - 1)) == []
    assert workers_stop_idle(now=later(idle + 1)) == [worker.public_id]


def test_the_idle_decision_moves_the_worker_to_stopping_so_no_session_is_handed_it_before_ec2_stops_it(sim):
    """The decision and the state change commit together: between the decision and EC2's stop (a separate
    call), a session arriving finds no free worker in the pool instead of one about to stop."""
    from apps.fleet.power import _claim_idle

    worker = pool_worker("running")
    assert _claim_idle(worker, now=later(24 * 60), actor="tests")
    assert status_of(worker) == "stopping"
    session = session_create(principal=ANONYMOUS, pool_name="default")
    assert (session.status, session.worker_id) == ("waiting", None)


def test_a_worker_whose_session_lab_outlives_its_session_is_not_stopped(sim):
    worker = pool_worker("running")
    slot = SessionLab.objects.create(worker=worker)
    session_lab_transition(lab=slot, to="starting", actor="tests", reason="test", held_since=timezone.now(),
                           cpu_cores=2, memory_gb=1, node_count=2)

    assert workers_stop_idle(now=later(24 * 60)) == []
    assert status_of(worker) == "running"


def test_a_pool_with_waiting_sessions_and_only_stopped_workers_gets_one_worker_started(sim):
    first, second = pool_worker("stopped", "lab-pool"), pool_worker("stopped", "lab-pool")
    other = pool_worker("stopped", "quiet-pool")
    for _ in range(2):
        assert session_create(principal=ANONYMOUS, pool_name="lab-pool").status == "waiting"

    assert workers_start_for_demand() == [first.public_id]
    assert (status_of(first), status_of(second), status_of(other)) == ("running", "stopped", "stopped")
    decision = AuditEvent.objects.get(resource_id=first.public_id, event_type="worker.demand_start")
    assert decision.metadata["reason"] == "session pool lab-pool: 2 waiting"
    assert workers_start_for_demand() == []  # one of the pool's workers runs: the queue moves from there
