"""The dashboard in Debian's Chromium (bin/ensure-browser.sh installs it) driven by Playwright, against a
real daphne serving the test database: log in through the form as each role, watch an instance's badge
change live (SSE) with no reload, terminate from the page, drain a worker, verify the audit chain.
Screenshots of every page go to var/screenshots/ (docs/dashboard.md uses them)."""

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.utils import timezone

from apps.lablets.models import LabletInstance
from apps.lablets.services import lablet_instance_create, lablet_instance_transition
from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from labmanager.services import user_ensure_with_role
from tests.events.conftest import daphne_process
from tests.factories import LabletDefinitionFactory, WorkerFactory

playwright_sync = pytest.importorskip("playwright.sync_api")  # a dev extra (pyproject), installed by make setup

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WAIT_MS = 15_000  # every wait in the browser is bounded

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the server is another process: the data must be committed
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="bin/ensure-browser.sh installs Debian's Chromium"),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with daphne_process({"LOGIN_RATE_LIMIT": "100/min", "LIVE_KEEPALIVE_SECONDS": "2"}) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    # The ORM is called from the test while Playwright's sync API runs its event loop (shared/STACK.md).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def users(transactional_db):
    made = {role: user_ensure_with_role(username=f"{role}-b", role=role, actor="tests")[0]
            for role in ("admin", "operator", "instructor")}
    # tests/conftest.py makes this process hash with MD5; the server keeps the production hashers.
    hasher = PBKDF2PasswordHasher()
    for role, user in made.items():
        type(user).objects.filter(pk=user.pk).update(password=hasher.encode(f"pw-{role}-b", hasher.salt()))
    return made


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(chromium, server, role: str, *, screenshot: bool = False):
    """A new browser context, logged in through the login form; returns its page on the overview."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{server}/dashboard/")
    assert "/accounts/login/" in page.url  # sent to log in first
    if screenshot:
        shot(page, "login")
    page.get_by_label("Username").fill(f"{role}-b")
    page.get_by_label("Password").fill(f"pw-{role}-b")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/dashboard/$"))
    return page


def nav_labels(page) -> list[str]:
    return page.locator('nav[aria-label="Main"] a').all_inner_texts()


def test_each_role_logs_in_and_sees_its_navigation(chromium, server, users):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", name="cml-demo-1",
                                                    cml_service_status="available", license_status="registered"),
                               to="running", actor="tests")
    definition = LabletDefinitionFactory(name="ccna-lab")
    lablet_instance_create(actor="tests", user=users["instructor"], definition_id=definition.public_id,
                           owner_id="student-001", timeslot_start=timezone.now() + timedelta(minutes=30))
    expected = {
        "instructor": ["Overview", "Instances", "Sessions", "API docs"],
        "operator": ["Overview", "Instances", "Fleet", "Sessions", "Audit", "Django admin", "API docs"],
        "admin": ["Overview", "Instances", "Fleet", "Sessions", "Audit", "Webhooks", "Django admin", "API docs"],
    }
    for role, labels in expected.items():
        page = log_in(chromium, server, role, screenshot=role == "instructor")
        assert nav_labels(page) == labels
        assert page.get_by_role("heading", name="Overview").is_visible()
        playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
        shot(page, f"overview-{role}")
        if role == "operator":
            page.get_by_role("link", name="Fleet").click()
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
    page.get_by_role("link", name="Fleet").click()
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
