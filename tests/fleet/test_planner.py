"""The fleet planner (apps.fleet): launches workers of scalable templates for bookings the fleet cannot hold,
holds back at a limit, terminates stopped workers nobody needs, and a launch refused in one zone goes to the
next. Against moto (behind the fault-injecting simulator) and the CML simulator; time moves by passing `now`."""

from datetime import timedelta
from decimal import Decimal

import boto3
import pytest
from botocore.config import Config
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.fleet.planner import plan_fleet
from apps.fleet.services import fleet_plan_run
from apps.lablets.services.scheduling import lablet_instances_schedule_pending
from apps.workers.models import Worker, WorkerTemplate
from apps.workers.services import worker_transition
from apps.workers.services.cml import worker_cml_health_all
from apps.workers.services.fleet import worker_launch
from apps.workers.services.sync import worker_ec2_sync
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db
REGION = "us-west-2"


def aws():
    return boto3.client("ec2", region_name=REGION, endpoint_url=settings.AWS_ENDPOINT_URL,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def scalable_template(**fields) -> WorkerTemplate:
    values = {"name": "elastic", "instance_type": "m5.2xlarge", "ami_id": "ami-12c6146b", "cpu_cores": 16,
              "memory_gb": 64, "storage_gb": 250, "max_nodes": 30, "cost_per_hour": Decimal("2.5"),
              "scalable": True, **fields}
    return WorkerTemplate.objects.create(**values)


def full_worker_and_a_reservation(*, starts_in: timedelta):
    """A placeable worker whose 8 cores are booked, and a PENDING 4-core reservation in the same slot."""
    start = timezone.now() + starts_in
    worker = placeable_worker(cpu_cores=8, memory_gb=32, storage_gb=150, max_nodes=15)
    big = LabletDefinitionFactory(cpu_cores=8, memory_gb=16, storage_gb=20, node_count=3)
    instance_in("scheduled", definition=big, worker=worker, timeslot_start=start - timedelta(hours=1),
                timeslot_end=start + timedelta(hours=3))
    small = LabletDefinitionFactory(cpu_cores=4, memory_gb=8, storage_gb=20, node_count=3)
    pending = instance_in("pending", definition=small, timeslot_start=start, timeslot_end=start + timedelta(hours=2))
    assert lablet_instances_schedule_pending(actor="tests")["placed"] == 0, "no room on the fleet"
    return worker, pending


def decisions(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def test_bookings_beyond_capacity_launch_a_worker_that_takes_them(ec2, cml):
    template = scalable_template()
    _full, pending = full_worker_and_a_reservation(starts_in=timedelta(minutes=15))

    result = fleet_plan_run()

    assert len(result["launched"]) == 1
    launched = Worker.objects.get(public_id=result["launched"][0])
    assert launched.template == template and launched.aws_instance_id
    (launch,) = decisions("fleet.launch")
    assert launch.resource_id == template.public_id and launch.metadata["bookings"] == 1
    assert "fit no running, stopped or launching worker" in launch.metadata["reason"]
    # Idempotent: the launching worker covers the demand; the next minute launches nothing.
    assert fleet_plan_run()["launched"] == []
    assert Worker.objects.filter(template=template).count() == 1

    worker_ec2_sync()
    worker_cml_health_all()
    launched.refresh_from_db()
    assert launched.is_placeable
    template.refresh_from_db()
    assert template.boot_seconds is not None and template.boot_samples == 1, "the boot was measured"
    lablet_instances_schedule_pending(actor="tests")
    pending.refresh_from_db()
    assert (pending.status, pending.worker_id) == ("scheduled", launched.pk)


def test_a_booking_far_ahead_is_planned_not_launched_yet(ec2, cml):
    scalable_template()
    full_worker_and_a_reservation(starts_in=timedelta(hours=5))

    plan = plan_fleet(now=timezone.now())
    assert fleet_plan_run()["launched"] == []

    (launch,) = plan.launches
    boot_and_lead = timedelta(minutes=settings.WORKER_BOOT_MINUTES + settings.LIFECYCLE_LEAD_MINUTES)
    assert launch.due == launch.first_start - boot_and_lead and not launch.held
    assert not decisions("fleet.launch")


@pytest.mark.parametrize("starts_in", [timedelta(minutes=5), timedelta(minutes=-10)], ids=["soon", "late"])
def test_a_daily_cost_cap_stops_launching_and_the_decision_says_so(ec2, cml, settings, starts_in):
    settings.FLEET_MAX_COST_PER_DAY = 50.0  # the template costs 2.5 × 24 = 60 a day
    template = scalable_template()
    full_worker_and_a_reservation(starts_in=starts_in)

    result = fleet_plan_run()

    assert result["launched"] == [] and result["held"] == 1
    assert not Worker.objects.filter(template=template).exists()
    (hold,) = decisions("fleet.hold")
    assert hold.metadata["limit"] == "FLEET_MAX_COST_PER_DAY"
    assert (hold.metadata["max_cost_per_day"], hold.metadata["launch_cost_per_day"]) == (50.0, 60.0)
    assert "FLEET_MAX_COST_PER_DAY" in hold.metadata["reason"]
    # The same situation a minute later is not journalled again.
    assert fleet_plan_run(now=timezone.now() + timedelta(minutes=1))["held"] == 0
    assert len(decisions("fleet.hold")) == 1


def test_a_template_limit_holds_back_too(ec2, cml):
    template = scalable_template(max_workers=0)
    full_worker_and_a_reservation(starts_in=timedelta(minutes=5))

    fleet_plan_run()

    (hold,) = decisions("fleet.hold")
    assert hold.metadata["limit"] == "max_workers" and hold.metadata["template_max_workers"] == 0
    assert not Worker.objects.filter(template=template).exists()


def stopped_worker(template: WorkerTemplate, *, hours_ago: float) -> Worker:
    worker = WorkerFactory(template=template, cpu_cores=16, memory_gb=64, storage_gb=250, max_nodes=30)
    for step in ("running", "stopped"):
        worker = worker_transition(worker=worker, to=step, actor="tests")
    aws().stop_instances(InstanceIds=[worker.aws_instance_id])
    Worker.objects.filter(pk=worker.pk).update(status_changed_at=timezone.now() - timedelta(hours=hours_ago))
    return worker


def test_unneeded_stopped_workers_are_terminated_never_one_with_booked_work(ec2, cml, settings):
    settings.FLEET_TERMINATE_UNNEEDED_HOURS = 24
    template = scalable_template()
    idle = stopped_worker(template, hours_ago=30)
    booked = stopped_worker(template, hours_ago=30)
    instance_in("scheduled", worker=booked, timeslot_start=timezone.now() + timedelta(days=3))
    recent = stopped_worker(template, hours_ago=2)

    result = fleet_plan_run()

    assert result["terminated"] == [idle.public_id]
    states = dict(Worker.objects.values_list("public_id", "status"))
    assert states == {idle.public_id: "terminated", booked.public_id: "stopped", recent.public_id: "stopped"}
    assert aws().describe_instances(InstanceIds=[idle.aws_instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] in ("shutting-down", "terminated")
    (decision,) = decisions("fleet.terminate")
    assert decision.metadata["worker_id"] == idle.public_id and decision.metadata["stopped_hours"] >= 30


def test_the_minimum_fleet_is_never_terminated(ec2, cml, settings):
    settings.FLEET_TERMINATE_UNNEEDED_HOURS = 24
    template = scalable_template(min_workers=1)
    first, second = stopped_worker(template, hours_ago=30), stopped_worker(template, hours_ago=40)

    assert fleet_plan_run()["terminated"] == [second.public_id]  # the longest stopped goes first
    assert fleet_plan_run()["terminated"] == []
    assert Worker.objects.get(pk=first.pk).status == "stopped"


def test_a_launch_refused_in_one_zone_succeeds_in_another(ec2):
    template = scalable_template(availability_zones=["us-west-2a", "us-west-2b"])
    ec2.arm("RunInstances", "InsufficientInstanceCapacity", match={"Placement.AvailabilityZone": "us-west-2a"})

    worker = worker_launch(actor="tests", name="elastic-1", template=template)

    assert worker.status in ("pending", "running") and worker.aws_instance_id
    raw = aws().describe_instances(InstanceIds=[worker.aws_instance_id])["Reservations"][0]["Instances"][0]
    assert raw["Placement"]["AvailabilityZone"] == "us-west-2b"
    (refused,) = AuditEvent.objects.filter(event_type="worker.ec2_failed", resource_id=worker.public_id)
    assert refused.metadata["availability_zone"] == "us-west-2a"
    assert refused.metadata["code"] == "InsufficientInstanceCapacity"


def test_a_launch_falls_back_to_the_next_instance_type(ec2):
    template = scalable_template(fallback_instance_types=["m5.4xlarge"])
    ec2.arm("RunInstances", "InsufficientInstanceCapacity", match={"InstanceType": "m5.2xlarge"})

    worker = worker_launch(actor="tests", name="elastic-1", template=template)

    assert worker.instance_type == "m5.4xlarge"
    assert (worker.cpu_cores, worker.memory_gb) == (16, 64), "the template's capacity is declared"


def test_a_launch_refused_everywhere_fails_the_worker_and_waits(ec2, cml):
    template = scalable_template(availability_zones=["us-west-2a", "us-west-2b"])
    full_worker_and_a_reservation(starts_in=timedelta(minutes=5))
    ec2.arm("RunInstances", "InsufficientInstanceCapacity")

    assert fleet_plan_run()["launched"] == []
    assert Worker.objects.get(template=template).status == "failed"
    assert len(decisions("fleet.launch_failed")) == 1
    fleet_plan_run()  # within LAUNCH_RETRY_MINUTES: held back, not tried again
    assert Worker.objects.filter(template=template).count() == 1
    assert decisions("fleet.hold")[-1].metadata["limit"] == "launch_failed"


def test_without_a_scalable_template_the_planner_does_nothing(ec2, cml):
    full_worker_and_a_reservation(starts_in=timedelta(minutes=5))
    assert fleet_plan_run()["skipped"] is True


def test_a_session_pool_waiting_with_no_worker_gets_one_launched_into_it(ec2, cml):
    from apps.sessions.models import SessionPool
    from apps.sessions.selectors import Principal
    from apps.sessions.services import session_create

    template = scalable_template()
    SessionPool.objects.create(name="ci")  # its workers were terminated: sessions queue with none to serve them
    for _ in range(2):
        session = session_create(principal=Principal(user_id=None, actor="anonymous@127.0.0.1"), pool_name="ci")
    assert session.status == "waiting"

    (launched,) = fleet_plan_run()["launched"]

    worker = Worker.objects.get(public_id=launched)
    assert (worker.template, worker.session_pool) == (template, "ci")
    (launch,) = decisions("fleet.launch")
    assert launch.metadata["pool"] == "ci" and "2 waiting session(s)" in launch.metadata["reason"]
    assert fleet_plan_run()["launched"] == [], "the pool has a worker now"


def test_decisions_are_sealed_and_handed_to_the_live_streams_and_webhooks(ec2, cml, settings,
                                                                         django_capture_on_commit_callbacks):
    from apps.audit.publish import events_sealed
    from apps.events.payload import LiveEvent

    settings.FLEET_MAX_WORKERS = 1  # the full worker is the one
    given_out = []

    def receiver(sender, events, **kwargs):
        given_out.extend(event for event in events if event.event_type.startswith("fleet."))

    events_sealed.connect(receiver, dispatch_uid="test-fleet-events")
    try:
        # One capture for the whole test: the journal's seal runs once per outer transaction (the test's).
        with django_capture_on_commit_callbacks(execute=True):
            scalable_template()
            full_worker_and_a_reservation(starts_in=timedelta(minutes=5))
            fleet_plan_run()
    finally:
        events_sealed.disconnect(dispatch_uid="test-fleet-events")

    (hold,) = given_out
    assert hold.sequence_num is not None and hold.metadata["limit"] == "FLEET_MAX_WORKERS"
    live = LiveEvent({name: getattr(hold, name) for name in (
        "sequence_num", "timestamp", "event_type", "actor", "resource_type", "resource_id", "action", "success",
        "error", "metadata")})
    assert (live.name, live.payload()["type"]) == ("audit", "io.lablet.fleet.hold")


def test_a_template_below_its_min_workers_gets_the_missing_ones(ec2, cml):
    template = scalable_template(min_workers=2, max_workers=1)

    result = fleet_plan_run()

    assert len(result["launched"]) == 1 and result["held"] == 1  # the second would pass its max_workers
    (launch,) = decisions("fleet.launch")
    assert launch.metadata["minimum"] is True and "min_workers" in launch.metadata["reason"]
    assert decisions("fleet.hold")[0].metadata["limit"] == "max_workers"
    assert fleet_plan_run()["launched"] == [] and Worker.objects.filter(template=template).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_pass_skips_while_another_one_runs_on_postgresql(ec2, cml):
    from django.db import connection

    from apps.fleet.services import PASS_LOCK_KEY

    if connection.vendor != "postgresql":
        pytest.skip("the pass lock is PostgreSQL's advisory lock (SQLite: one q cluster)")
    import psycopg

    scalable_template()
    full_worker_and_a_reservation(starts_in=timedelta(minutes=5))
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "host", "port", "user", "password")},
                         autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [PASS_LOCK_KEY])
        assert fleet_plan_run()["busy"] is True
        other.execute("SELECT pg_advisory_unlock(%s)", [PASS_LOCK_KEY])
    assert len(fleet_plan_run()["launched"]) == 1


def test_warm_pool_labs_not_booted_yet_count_as_demand(ec2, cml):
    scalable_template()
    placeable_worker(cpu_cores=8, memory_gb=32, storage_gb=150, max_nodes=15)
    # A pool of two labs, none booted yet: they are not in the ledger, so they are demand from now on.
    LabletDefinitionFactory(cpu_cores=6, memory_gb=8, storage_gb=20, node_count=3, warm_pool_depth=2)

    plan = plan_fleet(now=timezone.now())

    assert plan.figures["pending"] == 2 and plan.figures["unplaced"] == 1  # one fits beside, one does not
    (launch,) = plan.launches
    assert launch.bookings == 1 and launch.due <= timezone.now()


def test_a_stopped_worker_the_scheduler_cannot_start_is_not_counted_as_capacity(ec2, cml, settings):
    scalable_template()
    full_worker_and_a_reservation(starts_in=timedelta(minutes=5))
    WorkerFactory(status="stopped", aws_instance_id="", cpu_cores=16, memory_gb=64, storage_gb=250, max_nodes=30)
    assert len(plan_fleet(now=timezone.now()).launches) == 1  # no EC2 instance to start: not capacity

    started = WorkerFactory(status="stopped", cpu_cores=16, memory_gb=64, storage_gb=250, max_nodes=30)
    assert started.aws_instance_id
    assert plan_fleet(now=timezone.now()).launches == []  # startable: the scheduler places on it, power starts it
    settings.SCHEDULER_USE_STOPPED_WORKERS = False
    assert len(plan_fleet(now=timezone.now()).launches) == 1
