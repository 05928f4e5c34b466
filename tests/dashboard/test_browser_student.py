"""The student page (/s/<token>) in Debian's Chromium against a real server (see test_browser.py): no login,
the lab's status followed while it boots, a live countdown; a console opened from the page (the link's token as
the socket's subprotocol, under the production Content-Security-Policy) answers `show version`; the screenshot
is docs/img/student-page.png."""

import re
import shutil
from pathlib import Path

import pytest

from apps.core.csp import build_policy
from apps.lablets.models import LabletDefinition
from simulators.console_device import ConsoleDevice
from tests.events.conftest import server_process
from tests.events.test_console import running_instance
from apps.lablets.services import lablet_instance_transition
from apps.lablets.services.instances import lablet_instance_record_progress
from apps.lablets.services.student_links import student_link_create, student_link_revoke
from tests.dashboard.conftest import BROWSER_MARKS, SCREENSHOTS, WAIT_MS, playwright_sync, shot
from tests.factories import LabletDefinitionFactory, instance_in

pytestmark = BROWSER_MARKS
expect = playwright_sync.expect
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def test_the_student_page_shows_status_and_a_live_countdown(chromium, server, users):
    definition = LabletDefinitionFactory(name="ospf-lab", node_count=3, port_definitions=[
        {"name": "r1-console", "device_name": "r1", "console_type": "serial"}])
    instance = instance_in("instantiating", owner_id="student-page", created_by=users["instructor"],
                           definition=definition)
    lablet_instance_record_progress(instance=instance, step="booting", actor="tests", nodes_booted=1,
                                    nodes_total=3)
    _, token = student_link_create(instance=instance, actor="tests")
    context = chromium.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()

    page.goto(f"{server}/s/{token}")  # no login
    status = page.locator("[data-student-status]")
    expect(status).to_have_text("instantiating")
    expect(page.locator("[data-student-progress]")).to_be_visible()
    countdown = page.locator("[data-student-countdown]")
    expect(countdown).to_have_text(re.compile(r"^\d+:\d\d:\d\d$"))
    first = countdown.text_content()
    expect(countdown).not_to_have_text(first)  # it ticks

    lablet_instance_transition(instance=instance, to="running", actor="tests")
    expect(status).to_have_text("running", timeout=WAIT_MS)  # the page (polled every 10 s)'s poll follows, no reload
    expect(page.locator("[data-student-progress]")).to_be_hidden()
    shot(page, "student-page-booting")

    student_link_revoke(instance=instance, actor="tests")
    page.goto(f"{server}/s/{token}")
    expect(page.get_by_role("heading", name="This link is no longer valid")).to_be_visible()
    context.close()


TOPOLOGY = """lab:
  title: ospf-lab
nodes:
  - id: n0
    label: router1
    node_definition: iosv
  - id: n1
    label: switch1
    node_definition: iosvl2
links: []
"""


@pytest.fixture(scope="module")
def console_server(django_db_setup, django_db_blocker):
    # The production servers (bin/serve all) and CSP: the student page's xterm.js and socket work under it.
    with server_process({"CONTENT_SECURITY_POLICY": build_policy()}) as url:
        yield url


def test_the_student_opens_a_console_from_the_page_and_sees_the_device_answer(chromium, console_server):
    device = ConsoleDevice("router1").start()
    try:
        instance = running_instance(device)
        LabletDefinition.objects.filter(pk=instance.definition_id).update(cml_lab_yaml=TOPOLOGY)
        _, token = student_link_create(instance=instance, actor="tests")
        context = chromium.new_context(viewport={"width": 1000, "height": 1100})
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        refused = []
        page.on("console", lambda message: refused.append(message.text)
                if "Content Security Policy" in message.text else None)

        page.on("pageerror", lambda error: refused.append(f"pageerror {error}"))
        response = page.goto(f"{console_server}/s/{token}")  # no login
        assert "connect-src 'self'" in response.headers["content-security-policy"]
        devices = page.locator("[data-student-devices] li")
        expect(devices).to_have_count(2)
        expect(devices.first).to_contain_text("router1")
        expect(devices.first).to_contain_text("console_1")
        console = page.locator('[data-console$="/consoles/console_1"]')
        console.get_by_role("button", name="Open console").click()
        rows = console.locator(".xterm-rows")
        expect(rows).to_contain_text("router1>")
        expect(console.locator("[data-console-status]")).to_have_text("connected")
        console.locator(".xterm").click()
        page.keyboard.type("show version")
        page.keyboard.press("Enter")
        expect(rows).to_contain_text("Cisco IOS Software, router1 (simulated)")
        assert refused == []
        shot(page, "student-page")
        DOCS_IMG.mkdir(exist_ok=True)
        shutil.copyfile(SCREENSHOTS / "student-page.png", DOCS_IMG / "student-page.png")

        student_link_revoke(instance=instance, actor="tests")  # the open console closes
        expect(console.locator("[data-console-status]")).to_have_text("closed (4403)")
        context.close()
    finally:
        device.stop()
