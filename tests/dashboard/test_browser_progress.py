"""Live pieces of the dashboard in Debian's Chromium against a real server (see test_browser.py): an
instantiation's steps on the instance page, the fleet's load bars, the timeline's badges. The test process
drives the services (as the engine and the health poll would); the open page follows with no reload."""

from datetime import datetime, time, timedelta

from django.utils import timezone

from apps.lablets.services import lablet_instance_transition
from apps.lablets.services.instances import lablet_instance_record_progress
from apps.workers.models import Worker
from apps.workers.services.cml import worker_cml_health
from apps.workers.services.fleet import worker_transition
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = BROWSER_MARKS
expect = playwright_sync.expect


def running_worker(name: str) -> Worker:
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", name=name), to="running", actor="tests")
    Worker.objects.filter(pk=worker.pk).update(cml_service_status="available", license_status="registered")
    return Worker.objects.get(pk=worker.pk)


def open_live(page, path: str) -> None:
    page.goto(page.url.split("/dashboard/")[0] + path)
    expect(page.locator("[data-live-indicator]")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")


def test_the_instance_page_shows_the_steps_of_an_instantiation_as_they_happen(chromium, server, users):
    worker = running_worker("cml-progress")
    instance = instance_in("instantiating", worker=worker, owner_id="student-boot", created_by=users["instructor"],
                           definition=LabletDefinitionFactory(name="ospf-lab", node_count=3))
    page = log_in(chromium, server, "instructor")
    open_live(page, f"/dashboard/instances/{instance.public_id}/")
    step = page.locator(f'[data-live-step="{instance.public_id}"]')
    bar = page.locator(f'progress[data-live-progress="{instance.public_id}"]')
    expect(step).to_have_text("—")
    expect(bar).to_be_hidden()

    def progress(step_name, **counts):  # what the engine records at each step
        lablet_instance_record_progress(instance=instance, step=step_name, actor="engine-in-test", **counts)

    progress("importing")
    expect(step).to_have_text("importing the lab into CML")
    progress("starting")
    expect(step).to_have_text("starting the lab")
    expect(bar).to_be_hidden()
    progress("booting", nodes_booted=1, nodes_total=3)
    expect(step).to_have_text("nodes booting 1/3")
    expect(bar).to_be_visible()
    expect(bar).to_have_js_property("max", 3)
    expect(bar).to_have_js_property("value", 1)
    progress("booting", nodes_booted=2, nodes_total=3)
    expect(step).to_have_text("nodes booting 2/3")
    expect(bar).to_have_js_property("value", 2)
    expect(page.locator(f'[data-live-history="{instance.public_id}"] li').last).to_contain_text(
        "lablet_instance.progressed")
    expect(page.locator(f'[data-live-history="{instance.public_id}"] li').last).to_contain_text("— nodes booting 2/3")
    shot(page, "instance-progress")

    lablet_instance_transition(instance=instance, to="running", actor="engine-in-test")
    expect(page.locator("h1 .badge")).to_have_text("running")
    expect(step).to_have_text("")  # the transition ends the progress
    expect(bar).to_be_hidden()
    assert page.evaluate("window.__notReloaded") is True
    page.context.close()


def test_the_fleet_bars_follow_the_health_poll_live(chromium, server, users, cml_sim):
    worker = running_worker("cml-load")
    cml_sim.configure(cpu_percent=20)
    try:
        worker_cml_health(worker=worker)
        page = log_in(chromium, server, "operator")
        open_live(page, "/dashboard/fleet/")
        bars = page.locator(f'[data-live-bars="{worker.public_id}"]')
        used = bars.locator('meter[data-bar="cpu_usage_percent"]')
        held = bars.locator('meter[data-bar="cpu_held_percent"]')
        expect(used).to_have_js_property("value", 20)
        expect(held).to_have_js_property("value", 0)

        instance_in("running", worker=worker, definition=LabletDefinitionFactory(cpu_cores=24))
        cml_sim.configure(cpu_percent=80)
        worker_cml_health(worker=Worker.objects.get(pk=worker.pk))  # as the minute's poll would

        expect(used).to_have_js_property("value", 80)
        expect(held).to_have_js_property("value", 50)
        expect(bars.locator("[data-bar-text]").first).to_have_text("24/48 cores")
        assert page.evaluate("window.__notReloaded") is True
        page.context.close()
    finally:
        cml_sim.configure(cpu_percent=None)


def test_the_timeline_shows_the_day_per_worker_and_its_badges_change_live(chromium, server, users):
    today = timezone.localdate()
    midnight = timezone.make_aware(datetime.combine(today, time.min))
    workers = [running_worker(name) for name in ("cml-a", "cml-b", "cml-c")]
    definition = LabletDefinitionFactory(name="ccna-lab")
    plan = [  # worker, owner, start hour, hours, state
        (0, "student-01", 8, 2, "stopped"), (0, "student-02", 8, 3, "stopped"), (0, "student-03", 13, 2, "running"),
        (1, "student-04", 9, 4, "running"), (1, "student-05", 14, 2, "scheduled"), (1, "student-06", 17, 3, "scheduled"),
        (2, "student-07", 11, 2, "instantiating"), (2, "student-08", 19, 2, "scheduled"),
        (None, "student-09", 16, 2, "pending"),
    ]
    made = {}
    for index, owner, hour, hours, state in plan:
        made[owner] = instance_in(state, owner_id=owner, definition=definition,
                                  worker=workers[index] if index is not None else None,
                                  timeslot_start=midnight + timedelta(hours=hour),
                                  timeslot_end=midnight + timedelta(hours=hour + hours))
    page = log_in(chromium, server, "admin")
    page.get_by_role("link", name="Instances").click()
    page.get_by_role("link", name="Timeline per worker").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Timeline of")
    expect(page.locator("[data-live-indicator]")).to_have_text("live")
    assert page.locator("tbody th[scope=row]").all_inner_texts()[-1].startswith("unplaced")
    assert page.locator("line.now").count() == 5  # the axis and every row: today
    # The lines are drawn over the bars: a bar under the "now" line (or an hour line) must take the click.
    assert set(page.eval_on_selector_all("line.now, line.hour", "ls => ls.map(l => getComputedStyle(l).pointerEvents)")) == {"none"}
    box = page.locator("svg.lane").first.bounding_box()
    bar = page.locator(f'a.bar[href$="/{made["student-04"].public_id}/"] svg').bounding_box()
    assert abs(bar["x"] - (box["x"] + box["width"] * 9 / 24)) < 3  # 09:00 is 9/24 of the lane
    assert abs(bar["width"] - box["width"] * 4 / 24) < 3

    badge = page.locator(f'[data-live-instance="{made["student-07"].public_id}"]')
    expect(badge).to_have_text("instantiating")
    lablet_instance_transition(instance=made["student-07"], to="running", actor="engine-in-test")
    expect(badge).to_have_text("running")
    shot(page, "timeline")

    page.locator(f'a.bar[href$="/{made["student-05"].public_id}/"]').click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(made["student-05"].public_id)
    page.context.close()
