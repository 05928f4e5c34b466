"""The dashboard in Debian's Chromium (bin/ensure-browser.sh installs it) driven by Playwright, against a
real server (bin/serve all) serving the test database: log in through the form as each role, watch an instance's badge
change live (SSE) with no reload, terminate from the page, drain a worker, verify the audit chain.
Screenshots of every page go to var/screenshots/ (docs/dashboard.md uses them)."""

from datetime import timedelta

from django.utils import timezone

import time

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletInstance
from apps.lablets.services import lablet_instance_create, lablet_instance_transition
from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, WorkerFactory
from tests.lablets.engine_support import running_worker, two_router_definition
from tests.dashboard.conftest import BROWSER_MARKS, log_in, nav_labels, playwright_sync, shot

pytestmark = BROWSER_MARKS


def test_each_role_logs_in_and_sees_its_navigation(chromium, server, users):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", name="cml-demo-1",
                                                    cml_service_status="available", license_status="registered"),
                               to="running", actor="tests")
    definition = LabletDefinitionFactory(name="ccna-lab")
    lablet_instance_create(actor="tests", user=users["instructor"], definition_id=definition.public_id,
                           owner_id="student-001", timeslot_start=timezone.now() + timedelta(minutes=30))
    expected = {
        "instructor": ["Overview", "Instances", "Definitions", "Sessions", "API docs"],
        "operator": ["Overview", "Instances", "Definitions", "Fleet", "Reports", "Fleet plan", "Sessions", "Audit",
                     "Django admin", "API docs"],
        "admin": ["Overview", "Instances", "Definitions", "Fleet", "Reports", "Fleet plan", "Sessions", "Audit",
                  "Webhooks", "Django admin", "API docs"],
    }
    for role, labels in expected.items():
        page = log_in(chromium, server, role, screenshot=role == "instructor")
        assert nav_labels(page) == labels
        assert page.get_by_role("heading", name="Overview").is_visible()
        playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
        shot(page, f"overview-{role}")
        if role == "operator":
            page.get_by_role("link", name="Fleet", exact=True).click()
            playwright_sync.expect(page.locator(f'[data-live-worker="{worker.public_id}"]')).to_have_text("running")
            shot(page, "fleet")
        page.context.close()


def test_an_instructor_watches_an_instance_come_up_live_and_terminates_it(chromium, server, users):
    definition = LabletDefinitionFactory(name="ospf-lab")
    # Starts now; no worker has room, so it waits as a reservation (PENDING) — the engine's steps are
    # driven below through the lifecycle service, in this process, while the page stays open.
    instance = lablet_instance_create(actor="tests", user=users["instructor"], definition_id=definition.public_id,
                                      owner_id="student-live", timeslot_start=timezone.now())
    page = log_in(chromium, server, "instructor")
    page.get_by_role("link", name="Instances").click()
    badge = page.locator(f'[data-live-instance="{instance.public_id}"]')
    playwright_sync.expect(badge).to_have_text(instance.status)
    playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    for state in ("scheduled", "instantiating", "running"):
        instance = lablet_instance_transition(instance=instance, to=state, actor="engine-in-test")
        playwright_sync.expect(badge).to_have_text(state)
    assert page.evaluate("window.__notReloaded") is True  # the same document: updated live, no reload
    shot(page, "instances")

    page.get_by_role("link", name=instance.public_id).click()
    playwright_sync.expect(page.locator("h1 .badge")).to_have_text("running")
    page.get_by_label("Extend by (minutes)").fill("30")
    page.get_by_role("button", name="Extend").click()
    playwright_sync.expect(page.get_by_text("Extended by 30 minutes.")).to_be_visible()
    shot(page, "instance-detail")

    page.once("dialog", lambda dialog: dialog.accept())  # the confirmation of data-confirm
    page.get_by_role("button", name="Terminate").click()
    playwright_sync.expect(page.get_by_text("Terminate requested.")).to_be_visible()
    playwright_sync.expect(page.locator("h1 .badge")).to_have_text("terminated")
    assert LabletInstance.objects.get(pk=instance.pk).status == "terminated"
    page.context.close()


def test_an_instance_scheduled_now_on_the_page_comes_up_live_through_the_engine(chromium, server, users, cml):
    """The whole way: the Schedule form books a lab starting now on a worker with room, and the lifecycle
    engine (run here, as the q cluster's schedule runs it) brings it up on the CML simulator: importing,
    starting, nodes booting, running, all on the open instance page; then extend and terminate there."""
    cml.configure(boot_delay=1.0)
    running_worker(name="cml-class-1")
    definition = two_router_definition(name="now-lab")
    page = log_in(chromium, server, "instructor")
    page.get_by_role("link", name="Instances").click()
    page.get_by_role("link", name="Schedule instances").click()
    page.get_by_label("Definition", exact=True).select_option(definition.public_id)
    page.get_by_label("Owner ids").fill("student-now")  # start left blank: now
    page.get_by_role("button", name="Schedule").click()
    playwright_sync.expect(page.locator("#totals")).to_contain_text("1 of 1 booked")
    instance = LabletInstance.objects.get(definition=definition, owner_id="student-now")
    assert instance.status == "scheduled" and instance.worker.name == "cml-class-1"  # placed at once

    page.get_by_role("link", name=instance.public_id).click()
    badge, step = page.locator("h1 .badge"), page.locator(f'[data-live-step="{instance.public_id}"]')
    playwright_sync.expect(badge).to_have_text("scheduled")
    playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    lifecycle_tick()  # SCHEDULED → INSTANTIATING: import, start; the nodes take a second to boot
    playwright_sync.expect(badge).to_have_text("instantiating")
    playwright_sync.expect(step).to_have_text("nodes booting 0/2")
    shot(page, "instance-instantiating")
    deadline = time.monotonic() + 20
    while LabletInstance.objects.get(pk=instance.pk).status != "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        lifecycle_tick()
    playwright_sync.expect(badge).to_have_text("running")
    history = page.locator(f'[data-live-history="{instance.public_id}"]')
    playwright_sync.expect(history).to_contain_text("lablet_instance.running")
    assert page.evaluate("window.__notReloaded") is True  # every step arrived live

    page.reload()  # the console details are rendered with the page
    page.get_by_label("Extend by (minutes)").fill("15")
    page.get_by_role("button", name="Extend").click()
    playwright_sync.expect(page.get_by_text("Extended by 15 minutes.")).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Terminate").click()
    playwright_sync.expect(page.get_by_text("Terminate requested.")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    for _ in range(20):  # the engine archives and deletes the lab
        if LabletInstance.objects.get(pk=instance.pk).status == "terminated":
            break
        lifecycle_tick()
        time.sleep(0.3)
    playwright_sync.expect(badge).to_have_text("terminated")
    assert cml.summary()["labs"] == {}
    page.context.close()


def test_an_instructor_schedules_a_class_of_twenty_from_a_roster(chromium, server, users):
    definition = LabletDefinitionFactory(name="roster-lab")
    page = log_in(chromium, server, "instructor")
    page.get_by_role("link", name="Instances").click()
    page.get_by_role("link", name="Schedule instances").click()
    page.get_by_label("Definition", exact=True).select_option(definition.public_id)
    page.get_by_label("Owner ids").fill("\n".join(f"class-a-{n:02d}" for n in range(20)))
    page.get_by_role("button", name="Schedule").click()
    playwright_sync.expect(page.locator("#totals")).to_contain_text("20 of 20 booked")
    assert page.locator("tbody tr").count() == 20
    shot(page, "schedule")
    assert LabletInstance.objects.filter(definition=definition, created_by=users["instructor"]).count() == 20
    page.context.close()


def test_an_operator_drains_a_worker_and_sees_its_state_live_and_an_admin_verifies_the_chain(chromium, server, users):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", name="cml-drain-me",
                                                    cml_service_status="available"), to="running", actor="tests")
    page = log_in(chromium, server, "operator")
    page.get_by_role("link", name="Fleet", exact=True).click()
    card = page.locator("article", has_text="cml-drain-me")
    page.once("dialog", lambda dialog: dialog.dismiss())  # cancelled: nothing happens
    card.get_by_role("button", name="Drain").click()
    assert Worker.objects.get(pk=worker.pk).draining is False
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Drain").click()
    playwright_sync.expect(page.get_by_text("cml-drain-me: Draining: no new placements.")).to_be_visible()
    assert Worker.objects.get(pk=worker.pk).draining is True

    playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
    badge = page.locator(f'[data-live-worker="{worker.public_id}"]')
    worker_transition(worker=worker, to="stopping", actor="ec2-sync-in-test")  # as the EC2 poller would
    playwright_sync.expect(badge).to_have_text("stopping")  # live, on the open page
    page.context.close()

    page = log_in(chromium, server, "admin")
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Verify chain").click()
    playwright_sync.expect(page.locator("#verification")).to_contain_text("Chain intact")
    shot(page, "audit")
    page.context.close()
