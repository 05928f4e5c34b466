"""Warm pools (docs/workers.md#warm-pools): labs booted ahead, taken over by instances that start now.

Over HTTP to the CML simulator (engine_support); nothing is patched. Time goes to the engine as `now=` where a
test needs the future (a lab's age, a pool's idleness)."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.engine import lifecycle_tick
from apps.lablets.engine.warm import warm_pool_tick
from apps.lablets.models import ConsolePort, WarmLab
from apps.lablets.services import lablet_instance_create
from apps.lablets.services.definitions import lablet_definition_update
from apps.lablets.services.warm import warm_pool_targets
from apps.workers.ledger import WARM_LAB, usage_at
from tests.lablets.engine_support import CONSOLE_HOST, events, fresh, labs, running_worker, two_router_definition
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db

BOOT_DELAY = 2.0  # the simulator's seconds from STARTED to BOOTED: CML's minutes, scaled down


@pytest.fixture
def worker(cml):
    return running_worker()


@pytest.fixture
def definition():
    return two_router_definition(warm_pool_depth=2, idle_timeout_minutes=240)


def warm_labs(definition, *statuses):
    qs = WarmLab.objects.filter(definition=definition)
    return list(qs.filter(status__in=statuses) if statuses else qs)


@pytest.fixture(autouse=True)
def commits(django_capture_on_commit_callbacks):
    """The test's transaction never commits: run what a commit runs (the hand-over) where the booking's would."""
    global _commits
    _commits = django_capture_on_commit_callbacks
    return django_capture_on_commit_callbacks


def start_now(definition, owner="student-1"):
    with _commits(execute=True):
        instance = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id=owner,
                                          timeslot_start=timezone.now())
    return fresh(instance)


def fill(definition, cml, *, depth=None):
    """Tick until the pool holds `depth` READY labs (each pass imports, starts and looks at them)."""
    depth = definition.warm_pool_depth if depth is None else depth
    deadline = time.monotonic() + 15
    while len(warm_labs(definition, "ready")) < depth:
        assert time.monotonic() < deadline, [(w.status, w.last_error) for w in warm_labs(definition)]
        warm_pool_tick()
        time.sleep(0.05)


def test_the_pool_fills_to_its_depth_with_booted_labs_held_in_the_ledger(worker, definition, cml):
    warm_pool_tick()

    starting = warm_labs(definition, "starting", "ready")
    assert len(starting) == 2 and {w.worker_id for w in starting} == {worker.pk}
    assert usage_at([worker.pk], timezone.now())[worker.pk][WARM_LAB] == 2  # held from the moment it is placed
    fill(definition, cml)
    for warm in warm_labs(definition):
        lab = labs(cml)[warm.cml_lab_id]
        assert lab["title"] == warm.public_id and lab["state"] == "BOOTED"
        assert warm.content_hash == definition.content_hash and warm.ready_at
        assert ConsolePort.objects.filter(warm_lab=warm).count() == 2  # PATty-tagged at import
    kinds = set(AuditEvent.objects.filter(resource_type="warm_lab").values_list("event_type", flat=True))
    assert kinds == {"warm_lab.started", "warm_lab.ready"}
    warm_pool_tick()  # full: nothing more
    assert len(warm_labs(definition)) == 2


def test_a_start_now_instance_runs_within_seconds_with_a_warm_lab_and_waits_for_the_boot_without(
        worker, definition, cml):
    """The figure of the issue: "RUNNING in under 5 s of engine time with a warm lab, against minutes without".

    Engine time is wall-clock time here: the CML simulator boots nodes in BOOT_DELAY seconds (standing for CML's
    minutes). Without a warm lab the instance waits for its import and the boot (ticks in a bounded loop, as the
    q cluster runs them); with one it is RUNNING when its creation returns (the lab is already booted)."""
    cml.configure(boot_delay=BOOT_DELAY)
    fill(definition, cml, depth=2)
    ready = min(warm_labs(definition, "ready"), key=lambda w: (w.ready_at, w.pk))  # the first one ready goes first

    began = time.monotonic()
    instance = start_now(definition, owner="warm")
    warm_seconds = time.monotonic() - began

    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    assert warm_seconds < 5
    taken = WarmLab.objects.get(taken_by=instance)
    assert taken.pk == ready.pk and taken.status == "taken" and taken.ended_at
    assert (instance.worker_id, instance.cml_lab_id) == (taken.worker_id, taken.cml_lab_id)
    assert [c["port"] for c in instance.console] == sorted(
        ConsolePort.objects.filter(instance=instance).values_list("port", flat=True))
    assert instance.console[0]["host"] == CONSOLE_HOST and instance.console[0]["console_key"]
    assert not ConsolePort.objects.filter(warm_lab=taken).exists()
    path = ["lablet_instance.scheduled", "lablet_instance.instantiating", "lablet_instance.running"]
    assert [e for e in events(instance) if e in path] == path  # through the lifecycle's transitions
    assert "lablet_instance.lab_imported" not in events(instance)  # no import: the warm lab's
    assert AuditEvent.objects.filter(resource_id=taken.public_id, event_type="warm_lab.taken").exists()
    # The ledger: the instance by its slot, the other warm lab; the taken one no longer (no double count).
    held = usage_at([worker.pk], timezone.now())[worker.pk]
    assert (held["instance"], held[WARM_LAB]) == (1, 1)

    # Without: a definition with no pool; the instance is placed and waits for the engine.
    plain = two_router_definition(name="plain")
    began = time.monotonic()
    other = start_now(plain, owner="cold")
    deadline = began + 20
    while fresh(other).status != "running":
        assert time.monotonic() < deadline, fresh(other).lifecycle_step
        lifecycle_tick()
        time.sleep(0.1)
    cold_seconds = time.monotonic() - began
    assert cold_seconds >= BOOT_DELAY, (cold_seconds, warm_seconds)  # the import and the whole boot
    print(f"start-now to RUNNING: warm {warm_seconds:.2f} s, cold {cold_seconds:.2f} s (boot {BOOT_DELAY} s)")


def test_the_pool_refills_after_a_take(worker, definition, cml):
    fill(definition, cml)
    start_now(definition)
    assert len(warm_labs(definition, "ready")) == 1

    warm_pool_tick()
    fill(definition, cml)

    assert len(warm_labs(definition, "ready", "starting")) == 2
    assert len(warm_labs(definition, "taken")) == 1


def test_a_slot_starting_later_does_not_take_a_warm_lab(worker, definition, cml):
    fill(definition, cml)
    later = timezone.now() + timedelta(hours=1)
    instance = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="s",
                                      timeslot_start=later)
    assert fresh(instance).status == "scheduled"
    assert len(warm_labs(definition, "ready")) == 2


def test_a_warm_lab_older_than_the_max_age_is_recycled_and_replaced(worker, definition, cml, settings):
    settings.WARM_LAB_MAX_AGE_MINUTES = 30
    fill(definition, cml)
    old = {w.pk: w.cml_lab_id for w in warm_labs(definition)}

    report = warm_pool_tick(now=timezone.now() + timedelta(minutes=31))

    assert report["warm_recycled"] == 2 and report["warm_removed"] == 2 and report["warm_started"] == 2
    for pk, lab_id in old.items():
        warm = WarmLab.objects.get(pk=pk)
        assert warm.status == "recycled" and "older than" in warm.recycle_reason
        assert lab_id not in labs(cml)
        assert not ConsolePort.objects.filter(warm_lab=warm).exists()
    assert len(warm_labs(definition, "starting", "ready")) == 2
    assert AuditEvent.objects.filter(event_type="warm_lab.recycled").count() == 2


def test_a_definition_edit_makes_its_warm_labs_stale(worker, definition, cml, admin_user):
    fill(definition, cml)
    old = [w.pk for w in warm_labs(definition)]
    text = definition.cml_lab_yaml + "\n# edited\n"
    lablet_definition_update(definition=definition, user=admin_user, actor="tests", data={"cml_lab_yaml": text})

    warm_pool_tick()

    assert {(w.status, w.recycle_reason) for w in WarmLab.objects.filter(pk__in=old)} == {
        ("recycled", "stale: the definition's topology changed")}
    assert start_now(definition).status == "running"  # a lab of the new topology (none of the old one is taken)
    fill(definition, cml)  # replaced by labs of the new topology
    definition.refresh_from_db()
    assert {w.content_hash for w in warm_labs(definition, "ready")} == {definition.content_hash}


def test_the_pool_shrinks_to_zero_when_no_instance_started_for_the_idle_setting(worker, definition, cml, settings):
    settings.WARM_POOL_IDLE_HOURS = 2
    fill(definition, cml)

    warm_pool_tick(now=timezone.now() + timedelta(hours=1))
    assert len(warm_labs(definition, "ready")) == 2  # not idle yet
    (pool,) = warm_pool_targets(now=timezone.now() + timedelta(hours=1))
    assert (pool["definition_id"], pool["target"], pool["ready"], pool["pooled"]) == (definition.public_id, 2, 2, 2)
    assert warm_pool_targets(now=timezone.now() + timedelta(hours=3))[0]["target"] == 0  # what the planner sees

    report = warm_pool_tick(now=timezone.now() + timedelta(hours=2, minutes=1))

    assert report["warm_recycled"] == 2 and not warm_labs(definition, "starting", "ready")
    assert "surplus" in warm_labs(definition, "recycled")[0].recycle_reason
    assert not usage_at([worker.pk], timezone.now())  # nothing held any more


def test_a_warm_lab_needs_room_on_a_worker_for_good(cml):
    small = running_worker(cpu_cores=6)
    definition = two_router_definition(warm_pool_depth=3, cpu_cores=4)
    warm_pool_tick()
    assert len(warm_labs(definition)) == 1 and warm_labs(definition)[0].worker_id == small.pk


def test_the_api_takes_and_shows_the_warm_pool_depth(instructor_client):
    from tests.lablets.test_api import DEFINITIONS, definition_body

    created = instructor_client.post(DEFINITIONS, definition_body(name="pooled"), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["warm_pool_depth"] == 0  # the default: no pool
    url = f"{DEFINITIONS}/{created.json()['id']}"

    changed = instructor_client.put(url, {"warm_pool_depth": 3}, format="json")

    assert changed.status_code == 200 and changed.json()["warm_pool_depth"] == 3
    assert instructor_client.put(url, {"warm_pool_depth": -1}, format="json").status_code == 422
    assert instructor_client.get(url).json()["warm_pool_depth"] == 3


def test_the_reports_show_warm_lab_hours_and_their_share_of_the_cost(operator_user):
    """A worker (48 cores, 2.50/h) runs 08:00-12:00 (cost 10.00) and holds a 12-core warm lab 09:00-11:00:
    2 warm-lab hours, 24 of its 192 CPU-hours, so 1/8 of its cost (1.25)."""
    from datetime import date, datetime
    from datetime import timezone as dt_timezone
    from decimal import Decimal

    from django.test import Client

    from apps.dashboard.reports import fleet_report_summary
    from apps.lablets.services.fleet_cost import fleet_report
    from apps.workers.models import WorkerRunPeriod, WorkerTemplate
    from tests.factories import WorkerFactory

    day = date(2024, 3, 4)
    at = lambda hour: datetime(2024, 3, 4, hour, tzinfo=dt_timezone.utc)  # noqa: E731
    template = WorkerTemplate.objects.create(name="metal", instance_type="m5zn.metal", cpu_cores=48, memory_gb=192,
                                             storage_gb=500, max_nodes=100, cost_per_hour=Decimal("2.5"))
    worker = WorkerFactory(name="big", aws_instance_id="", cpu_cores=48, template=template)
    WorkerRunPeriod.objects.create(worker=worker, started_at=at(8), ended_at=at(12))
    definition = two_router_definition(cpu_cores=12)
    WarmLab.objects.create(definition=definition, worker=worker, content_hash="x", fingerprint="x", cpu_cores=12,
                           created_at=at(9), ended_at=at(11))

    (row,) = fleet_report(start=day, end=day, now=at(23))

    assert (row["running_hours"], row["cost"]) == (4.0, Decimal("10.0000"))
    assert (row["warm_hours"], row["warm_cost"]) == (2.0, Decimal("1.2500"))
    assert fleet_report_summary(start=day, end=day, now=at(23))["total"]["warm_cost"] == Decimal("1.2500")
    client = Client()
    client.force_login(operator_user)
    html = client.get("/dashboard/reports/", {"start": "2024-03-04", "end": "2024-03-04"}).content.decode()
    assert 'id="warm-heading"' in html and "1.25" in html
    csv_text = client.get("/dashboard/reports/export.csv", {"start": "2024-03-04", "end": "2024-03-04"}).content
    assert csv_text.decode().splitlines()[1].endswith(",10.0000,2.0000,1.2500")


def test_an_admin_sets_the_warm_pool_depth_in_the_admin_through_the_service(admin_user):
    from django.test import Client
    from django.urls import reverse

    from apps.lablets.models import LabletDefinition
    from tests.factories import LabletDefinitionFactory

    definition = LabletDefinitionFactory()
    admin = Client()
    admin.force_login(admin_user)
    url = reverse("admin:lablets_labletdefinition_change", args=[definition.pk])

    saved = admin.post(url, {"warm_pool_depth": "2", "_save": "Save"})

    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert LabletDefinition.objects.get(pk=definition.pk).warm_pool_depth == 2
    event = AuditEvent.objects.filter(event_type="lablet_definition.updated", resource_id=definition.public_id).get()
    assert (event.metadata["before"]["warm_pool_depth"], event.metadata["after"]["warm_pool_depth"]) == (0, 2)


def test_the_dashboard_editor_sets_the_warm_pool_depth_and_the_page_shows_it(instructor_user):
    from apps.lablets.models import LabletDefinition
    from tests.dashboard.test_definitions import NEW, browser, form_data

    client = browser(instructor_user)
    response = client.post(NEW, form_data(warm_pool_depth="2"))

    assert response.status_code == 302, response.content.decode()[:2000]
    definition = LabletDefinition.objects.get(name="ospf-basics")
    assert definition.warm_pool_depth == 2
    page = client.get(response["Location"]).content.decode()
    assert '<dd id="warm-pool">2 lab(s) booted ahead</dd>' in page
    edit = client.get(response["Location"] + "edit/").content.decode()
    assert 'name="warm_pool_depth" value="2"' in edit


def test_a_roster_booked_all_or_nothing_takes_warm_labs_and_hands_them_over_after_it_commits(
        worker, definition, cml, monkeypatch):
    """A roster with all_or_nothing and no reservations books every owner in one transaction with every worker
    locked: the warm labs' hand-over (CML calls, EC2 for direct console access) waits for that commit."""
    from django.db import transaction

    import apps.lablets.engine as engine
    from apps.lablets.services.bulk import lablet_instances_create_bulk

    fill(definition, cml)
    depth = []  # transactions open at each hand-over, beyond the test's own
    baseline = len(transaction.get_connection().atomic_blocks)
    hand_over = engine.warm_lab_hand_over
    monkeypatch.setattr(engine, "warm_lab_hand_over", lambda *args, **kwargs: (
        depth.append(len(transaction.get_connection().atomic_blocks) - baseline), hand_over(*args, **kwargs))[1])

    with _commits(execute=True):
        lablet_instances_create_bulk(actor="tests", definition_id=definition.public_id, owner_ids=["s1", "s2"],
                                     timeslot_start=timezone.now(), reserve=False, all_or_nothing=True)

    assert depth == [0, 0]  # each once the roster's transaction had ended, none while the fleet was locked
    assert sorted(w.taken_by.owner_id for w in warm_labs(definition, "taken")) == ["s1", "s2"]
    assert {fresh(w.taken_by).status for w in warm_labs(definition, "taken")} == {"running"}


def test_a_definition_with_warm_labs_is_not_deleted_until_its_pool_is_recycled(worker, definition, cml, admin_user):
    from apps.core.errors import Conflict
    from apps.lablets.models import LabletDefinition
    from apps.lablets.services.definitions import lablet_definition_delete

    fill(definition, cml)
    with pytest.raises(Conflict, match="2 warm lab"):
        lablet_definition_delete(definition=definition, user=admin_user, actor="tests")
    assert len(labs(cml)) == 2  # still held, still on CML

    lablet_definition_update(definition=definition, user=admin_user, actor="tests", data={"warm_pool_depth": 0})
    deadline = time.monotonic() + 15
    while warm_labs(definition, "starting", "ready", "recycling"):
        assert time.monotonic() < deadline
        warm_pool_tick()
    lablet_definition_delete(definition=definition, user=admin_user, actor="tests")
    assert not LabletDefinition.objects.filter(pk=definition.pk).exists() and labs(cml) == {}


def test_a_warm_lab_past_its_age_is_never_handed_out(worker, definition, cml, settings):
    fill(definition, cml)
    settings.WARM_LAB_MAX_AGE_MINUTES = 0  # every warm lab is now too old (the next tick recycles them)

    instance = start_now(definition)

    assert instance.status != "running" and not WarmLab.objects.filter(taken_by=instance).exists()


def test_warm_labs_of_a_stopped_worker_wait_for_it_and_hold_nothing_meanwhile(worker, definition, cml):
    from apps.workers.services import worker_transition

    fill(definition, cml)
    for to in ("stopping", "stopped"):
        worker_transition(worker=worker, to=to, actor="tests", reason="stopped by an operator")
    calls = sum(n for key, n in cml.calls.items() if key.startswith("DELETE"))

    warm_pool_tick()
    warm_pool_tick()

    assert {w.status for w in warm_labs(definition)} == {"recycling"}
    assert all(not w.last_error for w in warm_labs(definition))  # not tried: CML is down with its worker
    assert sum(n for key, n in cml.calls.items() if key.startswith("DELETE")) == calls  # nothing deleted
    assert worker.pk not in usage_at([worker.pk], timezone.now())  # the stopped worker holds nothing
