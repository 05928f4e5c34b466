"""Placement, service level: the interval check in every dimension, the policies, which workers are
ruled out and why, the scheduler pass (priority, aging, reservations) and re-placement.

Workers are real records over instances of the EC2 simulator; no gateway is called by placement.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.services import lablet_instance_create, lablet_instance_transition
from apps.lablets.services.scheduling import (
    lablet_instances_schedule_pending,
    lablet_instances_unplace_worker,
    scheduler_preview,
)
from apps.workers.models import Worker
from apps.workers.services import worker_drain, worker_transition
from apps.core.errors import Conflict
from tests.factories import LabletDefinitionFactory, WorkerFactory

pytestmark = pytest.mark.django_db

S = InstanceStatus
BASE = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(days=2)


def at(hours: float):
    """A moment `hours` after a fixed base two days ahead (slots are never in the past)."""
    return BASE + timedelta(hours=hours)


def worker(status="running", *, cpu=48, memory=192, storage=500, nodes=100, **fields) -> Worker:
    """A worker in `status` (reached through worker_transition) with this capacity; CML available."""
    made = WorkerFactory(cpu_cores=cpu, memory_gb=memory, storage_gb=storage, max_nodes=nodes)
    if status != "pending":
        made = worker_transition(worker=made, to=status, actor="tests")
    Worker.objects.filter(pk=made.pk).update(**{"cml_service_status": "available", **fields})
    made.refresh_from_db()
    return made


@pytest.fixture
def lab():
    """Needs 4 CPU, 8 GB, 50 GB storage, 5 nodes, no console ports; at most 4 hours."""
    return LabletDefinitionFactory(cpu_cores=4, memory_gb=8, storage_gb=50, node_count=5,
                                   default_duration_minutes=120, max_duration_minutes=240)


def book(definition, owner, start, end, *, reserve=True, priority=5, user=None) -> LabletInstance:
    return lablet_instance_create(actor="tests", user=user, definition_id=definition.public_id, owner_id=owner,
                                  timeslot_start=at(start), timeslot_end=at(end), reserve=reserve,
                                  priority=priority)


def preview_row(preview: dict, target: Worker) -> dict:
    return next(row for row in preview["workers"] if row["worker_id"] == target.public_id)


# --- the interval check --------------------------------------------------------------------------


def test_two_bookings_apart_from_each_other_both_fit_alongside_a_third_that_overlaps_both(lab):
    host = worker(cpu=8)  # room for two at any moment
    early = book(lab, "s1", 0, 2)
    late = book(lab, "s2", 2, 4)

    middle = book(lab, "s3", 1, 3, reserve=False)  # a count of overlapping bookings (2) would refuse it

    assert {early.status, late.status, middle.status} == {S.SCHEDULED}
    assert {early.worker_id, late.worker_id, middle.worker_id} == {host.pk}


def test_a_staggered_set_whose_peak_exceeds_capacity_is_refused_although_no_single_booking_does(lab):
    host = worker(cpu=8)
    book(lab, "s1", 0, 2)
    book(lab, "s2", 1, 3)
    third = book(lab, "s3", 2, 4, reserve=False)  # overlaps s2 only (s1 has ended at 2)
    assert third.worker_id == host.pk

    with pytest.raises(Conflict) as refused:
        book(lab, "s4", 1.5, 2.5, reserve=False)  # s1, s2 and s3 never overlap all at once, but s1+s2 do

    assert refused.value.extra == {"reason": "no_capacity"}
    assert "1 capacity" in refused.value.detail
    assert not LabletInstance.objects.filter(owner_id="s4").exists()
    row = preview_row(scheduler_preview(definition=lab, start=at(1.5), end=at(2.5)), host)
    assert row["rejected"]["reason"] == "capacity"
    assert "CPU cores: needs 4, 0 free of 8" in row["rejected"]["detail"]


def test_back_to_back_slots_do_not_overlap(lab):
    host = worker(cpu=4)  # room for one at a time
    first = book(lab, "s1", 0, 2)

    second = book(lab, "s2", 2, 4, reserve=False)

    assert first.worker_id == second.worker_id == host.pk
    with pytest.raises(Conflict):
        book(lab, "s3", 1.99, 3, reserve=False)


# --- every dimension -------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity, label", [
    ({"cpu": 6}, "CPU cores"),
    ({"memory": 12}, "memory (GB)"),
    ({"storage": 80}, "storage (GB)"),
    ({"nodes": 8}, "nodes"),
], ids=["cpu", "memory", "storage", "nodes"])
def test_each_dimension_alone_refuses_a_second_overlapping_instance(lab, capacity, label):
    host = worker(**capacity)  # room for one instance in this dimension, plenty in the others
    assert book(lab, "s1", 0, 2).worker_id == host.pk

    with pytest.raises(Conflict):
        book(lab, "s2", 1, 3, reserve=False)

    row = preview_row(scheduler_preview(definition=lab, start=at(1), end=at(3)), host)
    assert row["rejected"]["reason"] == "capacity"
    assert row["rejected"]["detail"].startswith(f"{label}: needs ")
    assert book(lab, "s3", 2, 4, reserve=False).worker_id == host.pk  # after the first: room again


def test_console_ports_are_a_dimension(settings):
    settings.CONSOLE_PORT_MIN, settings.CONSOLE_PORT_MAX = 9000, 9002  # three ports per worker
    ports = [{"name": f"console_{n}", "device_name": f"r{n}", "console_type": "serial"} for n in (1, 2)]
    lab = LabletDefinitionFactory(cpu_cores=1, memory_gb=1, storage_gb=1, node_count=1, port_definitions=ports)
    host = worker()
    assert book(lab, "s1", 0, 2).worker_id == host.pk

    with pytest.raises(Conflict):
        book(lab, "s2", 1, 3, reserve=False)

    row = preview_row(scheduler_preview(definition=lab, start=at(1), end=at(3)), host)
    assert row["rejected"]["reason"] == "ports"
    assert "console ports: needs 2, 1 free of 3" in row["rejected"]["detail"]


def test_a_personal_licence_hosts_one_live_instance(lab):
    host = worker(license_tier="personal")
    assert book(lab, "s1", 0, 2).worker_id == host.pk

    with pytest.raises(Conflict):
        book(lab, "s2", 1, 3, reserve=False)

    row = preview_row(scheduler_preview(definition=lab, start=at(1), end=at(3)), host)
    assert row["rejected"]["reason"] == "licence"
    assert "personal licence" in row["rejected"]["detail"]


def test_the_personal_licence_limit_is_a_setting(lab, settings):
    settings.PERSONAL_LICENSE_MAX_LIVE_INSTANCES = 2
    host = worker(license_tier="personal")

    placed = [book(lab, f"s{n}", 0, 2) for n in range(3)]

    assert [i.worker_id for i in placed] == [host.pk, host.pk, None]
    assert placed[2].status == S.PENDING


# --- policies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy, expected", [("best_fit", "busy"), ("spread", "empty")])
def test_best_fit_packs_and_spread_spreads(lab, settings, policy, expected):
    settings.SCHEDULER_POLICY = policy
    busy = worker(cpu=16)
    book(lab, "s1", 0, 2)  # lands on the only worker
    empty = worker(cpu=16)

    placed = book(lab, "s2", 0, 2)

    assert placed.worker_id == {"busy": busy, "empty": empty}[expected].pk
    assert scheduler_preview(definition=lab, start=at(0), end=at(2))["policy"] == policy


def test_running_workers_are_preferred_over_stopped_startable_ones(lab):
    stopped = worker("stopped", cpu=48)  # emptier and older, but would have to be started
    running = worker(cpu=4)

    first = book(lab, "s1", 0, 2)
    preview = scheduler_preview(definition=lab, start=at(0), end=at(2))
    second = book(lab, "s2", 0, 2)  # the running worker is full now

    assert first.worker_id == running.pk
    assert preview["placements"] == [{"index": 0, "worker_id": stopped.public_id, "starts_worker": True}]
    assert second.worker_id == stopped.pk and second.status == S.SCHEDULED


def test_stopped_workers_are_not_booked_when_the_setting_says_so(lab, settings):
    settings.SCHEDULER_USE_STOPPED_WORKERS = False
    stopped = worker("stopped")

    assert book(lab, "s1", 0, 2).status == S.PENDING
    assert preview_row(scheduler_preview(definition=lab, start=at(0), end=at(2)), stopped)["rejected"]["reason"] == "stopped"


def test_the_preview_gives_each_ruled_out_worker_its_reason(lab):
    usable = worker()
    draining = worker_drain(worker=worker(), actor="tests")
    unhealthy = worker(cml_service_status="unreachable")
    failed = worker("failed")
    no_ec2 = worker("stopped", aws_instance_id="")
    bad_licence = worker(license_status="expired")

    preview = scheduler_preview(definition=lab, start=at(0), end=at(2), count=1)

    reasons = {row["worker_id"]: (row["rejected"] or {}).get("reason") for row in preview["workers"]}
    assert reasons == {
        usable.public_id: None,
        draining.public_id: "draining",
        unhealthy.public_id: "unhealthy",
        failed.public_id: "failed",
        no_ec2.public_id: "stopped",
        bad_licence.public_id: "licence",
    }
    assert "has no EC2 instance to start" in preview_row(preview, no_ec2)["rejected"]["detail"]
    assert "CML is unreachable" in preview_row(preview, unhealthy)["rejected"]["detail"]
    assert preview["placements"] == [{"index": 0, "worker_id": usable.public_id, "starts_worker": False}]


def test_the_preview_shows_utilisation_before_and_after_and_what_does_not_fit(lab):
    host = worker(cpu=16, memory=64, storage=500, nodes=100)
    book(lab, "s1", 0, 2)

    preview = scheduler_preview(definition=lab, start=at(0), end=at(2), count=4)

    assert (preview["placeable"], preview["unplaceable"]) == (3, 1)
    assert [p["worker_id"] for p in preview["placements"]] == [host.public_id] * 3 + [None]
    assert preview["placements"][3]["reason"] == "no worker has room"
    row = preview_row(preview, host)
    assert row["placed"] == 3
    assert row["utilisation_before"] == {"cpu_cores": 25.0, "memory_gb": 12.5, "storage_gb": 10.0, "node_count": 5.0}
    assert row["utilisation_after"] == {"cpu_cores": 100.0, "memory_gb": 50.0, "storage_gb": 40.0, "node_count": 20.0}
    assert row["full_after"]["reason"] == "capacity"
    assert LabletInstance.objects.count() == 1, "a preview books nothing"


# --- the scheduler pass -------------------------------------------------------------------------------


def test_the_pass_places_the_highest_priority_first(lab):
    low = book(lab, "s-low", 0, 2, priority=3)
    high = book(lab, "s-high", 0, 2, priority=8)
    middle = book(lab, "s-mid", 0, 2, priority=5)
    assert {i.status for i in (low, high, middle)} == {S.PENDING}  # no workers yet
    host = worker(cpu=4)  # room for one

    outcome = lablet_instances_schedule_pending(actor="tests")

    assert outcome == {"pending": 3, "placed": 1, "waiting": 2}
    assert LabletInstance.objects.get(pk=high.pk).worker_id == host.pk
    assert set(LabletInstance.objects.filter(status=S.PENDING).values_list("owner_id", flat=True)) == {"s-low", "s-mid"}


def test_aging_lets_a_long_waiting_instance_overtake_a_higher_priority(lab, settings):
    settings.SCHEDULER_AGING_MINUTES = 30
    waited = book(lab, "s-waited", 0, 2, priority=5)
    fresh = book(lab, "s-fresh", 0, 2, priority=7)
    LabletInstance.objects.filter(pk=waited.pk).update(created_at=timezone.now() - timedelta(minutes=95))  # 5 + 3
    worker(cpu=4)

    lablet_instances_schedule_pending(actor="tests")

    assert LabletInstance.objects.get(pk=waited.pk).status == S.SCHEDULED
    assert LabletInstance.objects.get(pk=fresh.pk).status == S.PENDING


def test_within_a_priority_the_oldest_goes_first(lab):
    older = book(lab, "s-older", 0, 2)
    newer = book(lab, "s-newer", 0, 2)
    LabletInstance.objects.filter(pk=newer.pk).update(created_at=timezone.now() + timedelta(seconds=1))
    worker(cpu=4)

    lablet_instances_schedule_pending(actor="tests")

    assert LabletInstance.objects.get(pk=older.pk).status == S.SCHEDULED
    assert LabletInstance.objects.get(pk=newer.pk).status == S.PENDING


def test_a_pending_reservation_is_placed_once_capacity_frees(lab):
    host = worker(cpu=4)
    blocker = book(lab, "s1", 0, 2)
    waiting = book(lab, "s2", 1, 3)
    assert (blocker.status, waiting.status) == (S.SCHEDULED, S.PENDING)
    assert lablet_instances_schedule_pending(actor="tests")["placed"] == 0

    lablet_instance_transition(instance=blocker, to=S.TERMINATED, actor="tests", reason="cancelled")
    outcome = lablet_instances_schedule_pending(actor="scheduler")

    assert outcome["placed"] == 1
    placed = LabletInstance.objects.get(pk=waiting.pk)
    assert (placed.status, placed.worker_id) == (S.SCHEDULED, host.pk)
    event = AuditEvent.objects.get(event_type="lablet_instance.scheduled", resource_id=waiting.public_id)
    assert event.actor == "scheduler"
    assert event.metadata["worker_id"] == host.public_id


def test_the_pass_leaves_reservations_whose_slot_has_ended(lab):
    waiting = book(lab, "s1", 0, 2)
    worker()

    outcome = lablet_instances_schedule_pending(actor="tests", now=at(3))

    assert outcome == {"pending": 0, "placed": 0, "waiting": 0}
    assert LabletInstance.objects.get(pk=waiting.pk).status == S.PENDING


# --- re-placement ------------------------------------------------------------------------------------


def test_re_placement_moves_scheduled_instances_to_another_worker(lab):
    lost = worker(cpu=8)
    placed = [book(lab, f"s{n}", 0, 2) for n in range(2)]
    assert {i.worker_id for i in placed} == {lost.pk}
    spare = worker(cpu=8)
    worker_transition(worker=lost, to="failed", actor="tests")

    moved = lablet_instances_unplace_worker(worker=lost, actor="tests", reason="worker failed")

    assert moved == 2
    for instance in placed:
        after = LabletInstance.objects.get(pk=instance.pk)
        assert (after.status, after.worker_id) == (S.SCHEDULED, spare.pk)
        steps = list(AuditEvent.objects.filter(resource_id=instance.public_id, action="lablet_instance.transition")
                     .order_by("id").values_list("metadata__from", "metadata__to"))
        assert steps == [("pending", "scheduled"), ("scheduled", "pending"), ("pending", "scheduled")]


def test_a_failed_worker_hands_its_scheduled_instances_to_the_scheduler_once_its_change_commits(
        lab, django_capture_on_commit_callbacks):
    """worker_transition announces the withdrawn worker after its commit (apps.workers.signals); the
    scheduler, a receiver, places the instances elsewhere."""
    lost = worker(cpu=8)
    instance = book(lab, "s1", 0, 2)
    spare = worker(cpu=8)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        worker_transition(worker=lost, to="failed", actor="tests")
    assert LabletInstance.objects.get(pk=instance.pk).worker_id == lost.pk  # nothing moves before the commit
    for callback in callbacks:
        callback()

    after = LabletInstance.objects.get(pk=instance.pk)
    assert (after.status, after.worker_id) == (S.SCHEDULED, spare.pk)


def test_re_placement_keeps_a_reservation_when_no_other_worker_has_room(lab):
    lost = worker(cpu=4)
    instance = book(lab, "s1", 0, 2)
    worker(cpu=2)  # too small

    worker_drain(worker=lost, actor="tests", force=True)

    after = LabletInstance.objects.get(pk=instance.pk)
    assert (after.status, after.worker_id) == (S.PENDING, None)
    reason = AuditEvent.objects.filter(resource_id=instance.public_id, event_type="lablet_instance.pending").get()
    assert "can no longer host it" in reason.metadata["reason"]


def test_re_placement_leaves_running_instances_alone(lab):
    host = worker()
    instance = book(lab, "s1", 0, 2)
    for step in (S.INSTANTIATING, S.RUNNING):
        instance = lablet_instance_transition(instance=instance, to=step, actor="tests")

    assert lablet_instances_unplace_worker(worker=host, actor="tests", reason="drained") == 0
    assert LabletInstance.objects.get(pk=instance.pk).status == S.RUNNING
