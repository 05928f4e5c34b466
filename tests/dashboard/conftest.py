"""Browser fixtures for the dashboard tests: the production servers (bin/serve all) serving the test database, Debian's Chromium
(bin/ensure-browser.sh installs it) driven by Playwright, users per role with passwords, login through the
form, screenshots into var/screenshots/ (docs/dashboard.md uses them)."""

import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from apps.identity.services import user_ensure_with_role
from tests.events.conftest import qcluster_process, server_process

playwright_sync = pytest.importorskip("playwright.sync_api")  # a dev extra (pyproject), installed by make setup

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WAIT_MS = 15_000  # every wait in the browser is bounded

BROWSER_MARKS = [
    pytest.mark.django_db(transaction=True),  # the server is another process: the data must be committed
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="bin/ensure-browser.sh installs Debian's Chromium"),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, cml_sim, ec2_sim):
    # The server reaches the same simulators as this process (an action on a page may call CML or S3).
    simulators = {name: str(getattr(settings, name)) for name in (
        "CML_URL_OVERRIDE", "CML_USERNAME", "CML_PASSWORD", "CML_TIMEOUT_SECONDS", "AWS_ENDPOINT_URL", "AWS_REGION")}
    # And a q cluster: terminate and collection from a page are background jobs.
    with (server_process({"LOGIN_RATE_LIMIT": "100/min", "LIVE_KEEPALIVE_SECONDS": "2", **simulators}) as url,
          qcluster_process(simulators)):
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


def log_in(chromium, server, role: str, *, screenshot: bool = False, viewport=(1280, 900)):
    """A new browser context (a laptop's viewport unless told), logged in through the login form; returns its
    page on the overview."""
    context = chromium.new_context(viewport={"width": viewport[0], "height": viewport[1]})
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
