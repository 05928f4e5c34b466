"""The browser console in Debian's Chromium (Playwright) against the production servers (bin/serve all): an
instructor opens a running instance's page, opens its console (xterm.js over /ws/lablet-instances/<id>/consoles/
<name>, proxied to a fake device console on a loopback port), types and sees the device answer. The screenshot
goes to docs/img/dashboard-console.png (docs/dashboard.md)."""

import time
from pathlib import Path

import pytest

from apps.audit.models import AuditEvent
from apps.core.csp import build_policy
from simulators.console_device import ConsoleDevice
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.events.conftest import server_process
from tests.events.test_console import running_instance

pytestmark = BROWSER_MARKS
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    # The production profile's Content-Security-Policy: xterm.js and the socket must work under it.
    with server_process({"LOGIN_RATE_LIMIT": "100/min", "CONTENT_SECURITY_POLICY": build_policy()}) as url:
        yield url


def test_an_instructor_types_into_the_console_and_sees_the_device_answer(chromium, server, users):
    device = ConsoleDevice("router1").start()
    try:
        instance = running_instance(device, created_by=users["instructor"])
        page = log_in(chromium, server, "instructor")
        refused = []
        page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
                else None)
        response = page.goto(f"{server}/dashboard/instances/{instance.public_id}/")
        assert "connect-src 'self'" in response.headers["content-security-policy"]
        console = page.locator('[data-console$="/consoles/console_1"]')
        console.get_by_role("button", name="Open console").click()
        rows = console.locator(".xterm-rows")
        playwright_sync.expect(rows).to_contain_text("router1>")
        playwright_sync.expect(console.locator("[data-console-status]")).to_have_text("connected")
        console.locator(".xterm").click()
        page.keyboard.type("show version")
        page.keyboard.press("Enter")
        playwright_sync.expect(rows).to_contain_text("Cisco IOS Software, router1 (simulated)")
        page.keyboard.type("enable")
        page.keyboard.press("Enter")
        playwright_sync.expect(rows).to_contain_text("router1#")
        assert refused == []
        shot(page, "console")
        console.screenshot(path=str(DOCS_IMG / "dashboard-console.png"))
        page.context.close()  # the socket goes: the console is closed and journalled
        closed = AuditEvent.objects.filter(event_type="console.closed", resource_id=instance.public_id)
        deadline = time.monotonic() + 10
        while not closed.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert closed.get().actor == "instructor-b"
    finally:
        device.stop()
