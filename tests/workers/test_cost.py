"""Cost: running-hours recorded by the worker lifecycle and the fleet report (service and `manage.py
fleet_report`). Idle stop and demand start: tests/fleet/test_power.py.

No mocks: stops and starts go through boto3 over HTTP to moto behind the fault-injecting simulator
(tests/conftest.py). Time is moved forward by passing `now` to the services, never by patching clocks."""

import csv
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from io import StringIO

import boto3
import pytest
from botocore.config import Config
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.lablets.models import LabletDefinition, LabletInstance
from apps.lablets.services.instances import lablet_instance_transition
from apps.workers.models import Worker, WorkerRunPeriod, WorkerTemplate
from apps.workers.services import worker_transition
from apps.lablets.services.fleet_cost import fleet_report
from apps.core.errors import ValidationFailed
from tests.factories import TOPOLOGY, WorkerFactory

pytestmark = pytest.mark.django_db

REGION = "us-west-2"


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def sim(ec2_sim):
    """The EC2 simulator as the session left it, faults cleared before and after."""
    ec2_sim.disarm()
    yield ec2_sim
    ec2_sim.disarm()


def aws():
    return boto3.client("ec2", region_name=REGION, endpoint_url=settings.AWS_ENDPOINT_URL,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def ec2_state(instance_id: str) -> str:
    return aws().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def worker_in(state: str, **kwargs) -> Worker:
    """A record over a real running moto instance, moved to `state` through worker_transition (and, for
    stopped, the moto instance stopped too)."""
    worker = WorkerFactory(**kwargs)
    for step in {"pending": [], "running": ["running"], "stopped": ["running", "stopped"]}[state]:
        worker = worker_transition(worker=worker, to=step, actor="tests")
    if state == "stopped" and worker.aws_instance_id:
        aws().stop_instances(InstanceIds=[worker.aws_instance_id])
    return worker


def status_of(worker: Worker) -> str:
    return Worker.objects.get(pk=worker.pk).status


_definitions = iter(range(10**6))


def booking(worker: Worker, *, start: datetime, hours: float = 2, cpu: int = 4, path=("scheduled",)) -> LabletInstance:
    """A lablet instance on `worker`, made with the ORM, its status reached through the lifecycle function."""
    definition = LabletDefinition.objects.create(
        name=f"cost-lab-{next(_definitions)}", version="1.0", cml_lab_yaml=TOPOLOGY,
        content_hash=LabletDefinition.hash_yaml(TOPOLOGY), cpu_cores=cpu, memory_gb=8, storage_gb=20, node_count=3)
    instance = LabletInstance.objects.create(
        definition=definition, owner_id=f"student-{definition.pk}", worker=worker, timeslot_start=start,
        timeslot_end=start + timedelta(hours=hours), cpu_cores=cpu, memory_gb=8, storage_gb=20, node_count=3)
    for step in path:
        instance = lablet_instance_transition(instance=instance, to=step, actor="tests")
    return instance


RUNNING_PATH = ("scheduled", "instantiating", "running")


def later(minutes: float) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


# --- running-hours --------------------------------------------------------------------------------


def test_entering_running_opens_a_period_and_leaving_it_closes_it(sim):
    worker = WorkerFactory()
    assert not WorkerRunPeriod.objects.exists()

    worker = worker_transition(worker=worker, to="running", actor="tests")
    opened = WorkerRunPeriod.objects.get(worker=worker)
    assert (opened.started_at, opened.ended_at) == (worker.status_changed_at, None)

    worker = worker_transition(worker=worker, to="stopping", actor="tests")
    opened.refresh_from_db()
    assert opened.ended_at == worker.status_changed_at

    worker = worker_transition(worker=worker, to="running", actor="tests")
    worker = worker_transition(worker=worker, to="terminated", actor="tests")
    periods = list(WorkerRunPeriod.objects.filter(worker=worker).values_list("ended_at", flat=True))
    assert len(periods) == 2 and periods[-1] == worker.status_changed_at


def test_moves_between_other_states_record_no_period(sim):
    worker = WorkerFactory()
    for step in ("stopped", "pending", "failed", "stopped"):
        worker = worker_transition(worker=worker, to=step, actor="tests")

    assert not WorkerRunPeriod.objects.exists()


def test_the_admin_shows_run_periods_read_only(admin_user, sim):
    worker = worker_in("running")
    period = WorkerRunPeriod.objects.get(worker=worker)
    browser = Client()
    browser.force_login(admin_user)

    changelist = browser.get(reverse("admin:workers_workerrunperiod_changelist"))

    assert changelist.status_code == 200 and worker.name in changelist.content.decode()
    assert browser.get(reverse("admin:workers_workerrunperiod_add")).status_code == 403
    change = reverse("admin:workers_workerrunperiod_change", args=[period.pk])
    browser.post(change, {"started_at_0": "2020-01-01", "started_at_1": "00:00:00"})
    period.refresh_from_db()
    assert period.started_at == worker.status_changed_at


# --- fleet report ---------------------------------------------------------------------------------

DAY1, DAY2 = date(2024, 3, 4), date(2024, 3, 5)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt_timezone.utc)


@pytest.fixture
def history():
    """Two workers over two days (UTC). big: 48 cores at 2.50/h; small: 16 cores, no template.

    big runs 08-12 and 22-02 (6 h on day 1, 2 h on day 2); it hosts 09-11 (12 cores), 23-01 (24 cores,
    terminated at 00:30) and a lab cancelled before its slot. small has run since 20:00 on day 2 and
    hosts 21:00-22:30 (8 cores). A period the day before is outside the report."""
    tpl = WorkerTemplate.objects.create(name="metal", instance_type="m5zn.metal", cpu_cores=48, memory_gb=192,
                                        storage_gb=500, max_nodes=100, cost_per_hour=Decimal("2.5"))
    big = WorkerFactory(name="big", aws_instance_id="", cpu_cores=48, template=tpl)
    small = WorkerFactory(name="small", aws_instance_id="", cpu_cores=16)
    WorkerRunPeriod.objects.bulk_create([
        WorkerRunPeriod(worker=big, started_at=at(DAY1, 8) - timedelta(days=1), ended_at=at(DAY1, 9) - timedelta(days=1)),
        WorkerRunPeriod(worker=big, started_at=at(DAY1, 8), ended_at=at(DAY1, 12)),
        WorkerRunPeriod(worker=big, started_at=at(DAY1, 22), ended_at=at(DAY2, 2)),
        WorkerRunPeriod(worker=small, started_at=at(DAY2, 20)),
    ])
    booking(big, start=at(DAY1, 9), hours=2, cpu=12, path=(*RUNNING_PATH, "stopping", "stopped"))
    cut = booking(big, start=at(DAY1, 23), hours=2, cpu=24, path=(*RUNNING_PATH, "terminated"))
    cancelled = booking(big, start=at(DAY1, 14), hours=1, cpu=48, path=("scheduled", "terminated"))
    booking(small, start=at(DAY2, 21), hours=1.5, cpu=8, path=RUNNING_PATH)
    LabletInstance.objects.filter(worker=big, timeslot_start=at(DAY1, 9)).update(stopped_at=at(DAY1, 11))
    LabletInstance.objects.filter(pk=cut.pk).update(terminated_at=at(DAY2, 0, 30))
    LabletInstance.objects.filter(pk=cancelled.pk).update(terminated_at=at(DAY1, 10))
    return big, small


def test_the_fleet_report_gives_exact_hours_utilisation_and_cost_per_worker_per_day(
    history, django_assert_max_num_queries
):
    big, small = history

    with django_assert_max_num_queries(4):  # run periods, bookings, warm labs, workers
        rows = fleet_report(start=DAY1, end=DAY2, now=at(DAY2, 23))

    assert [(r["worker_name"], r["date"]) for r in rows] == [("big", DAY1), ("big", DAY2), ("small", DAY2)]
    figures = [(r["running_hours"], r["booked_hours"], r["booked_cpu_hours"], r["cost"]) for r in rows]
    assert figures == [(6.0, 3.0, 48.0, Decimal("15.0000")), (2.0, 0.5, 12.0, Decimal("5.0000")),
                       (3.0, 1.5, 12.0, None)]  # small's open period counts up to now (23:00)
    assert [r["utilisation_percent"] for r in rows] == [pytest.approx(100 * 48 / (48 * 6)), 12.5, 25.0]
    assert rows[0]["worker_id"] == big.public_id and rows[2]["cpu_cores"] == 16


def test_the_fleet_report_leaves_out_days_without_activity_and_refuses_a_reversed_range(history):
    assert fleet_report(start=DAY2 + timedelta(days=1), end=DAY2 + timedelta(days=1), now=at(DAY2, 23)) == []
    assert [r["date"] for r in fleet_report(start=DAY1, end=DAY1)] == [DAY1]
    with pytest.raises(ValidationFailed, match="before its start"):
        fleet_report(start=DAY2, end=DAY1)


# --- manage.py fleet_report -----------------------------------------------------------------------


def command(*args) -> str:
    out = StringIO()
    call_command("fleet_report", *args, stdout=out)
    return out.getvalue()


def test_the_command_prints_a_table_per_worker_with_a_total(history):
    out = command("--from", "2024-03-04", "--to", "2024-03-05")

    lines = out.splitlines()
    assert lines[0] == "Fleet report 2024-03-04 to 2024-03-05 (UTC)"
    big, small, total = lines[3].split(), lines[4].split(), lines[-1].split()
    # small's open period runs to the end of the report now that the days are past: 4 h.
    assert big[1:] == ["big", "8.00", "3.50", "15.6", "20.00"]
    assert small[1:] == ["small", "4.00", "1.50", "18.8", "-"]
    assert total == ["total", "2", "worker(s)", "12.00", "5.00", "16.1", "20.00"]


def test_the_command_writes_csv_per_worker_or_per_day(history):
    big, small = history

    rows = list(csv.reader(StringIO(command("--from", "2024-03-04", "--to", "2024-03-05", "--format", "csv"))))
    daily = list(csv.reader(StringIO(command("--from", "2024-03-05", "--to", "2024-03-05", "--format", "csv",
                                             "--daily"))))

    assert rows == [
        ["worker_id", "worker_name", "running_hours", "booked_hours", "utilisation_percent", "cost"],
        [big.public_id, "big", "8.0000", "3.5000", "15.62", "20.0000"],
        [small.public_id, "small", "4.0000", "1.5000", "18.75", ""],
        ["total", "2 worker(s)", "12.0000", "5.0000", "16.07", "20.0000"],
    ]
    assert daily == [
        ["date", "worker_id", "worker_name", "running_hours", "booked_hours", "utilisation_percent", "cost"],
        ["2024-03-05", big.public_id, "big", "2.0000", "0.5000", "12.50", "5.0000"],
        ["2024-03-05", small.public_id, "small", "4.0000", "1.5000", "18.75", ""],
        ["", "total", "2 worker(s)", "6.0000", "2.0000", "15.00", "5.0000"],
    ]


def test_the_command_defaults_to_the_last_seven_days(sim):
    worker_in("running", name="today-worker")

    out = command()

    today = timezone.localdate()
    assert out.splitlines()[0] == f"Fleet report {today - timedelta(days=6)} to {today} (UTC)"
    assert "today-worker" in out


@pytest.mark.parametrize("args, message", [
    (["--from", "2024-13-01"], "--from must be a date"),
    (["--to", "yesterday"], "--to must be a date"),
    (["--from", "2024-03-05", "--to", "2024-03-04"], "after --to"),
    (["--format", "xml"], "invalid choice"),
])
def test_the_command_refuses_bad_input_clearly(args, message):
    with pytest.raises(CommandError, match=message):
        command(*args)
