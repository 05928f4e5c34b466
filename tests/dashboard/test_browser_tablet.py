"""Every dashboard page on a tablet (768 x 1024, portrait) in Chromium: nothing makes the page scroll
sideways (wide tables scroll inside their own box), and the navigation stays reachable. Screenshots:
var/screenshots/tablet-<page>.png."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.lablets.services import lablet_instance_create
from apps.workers.services.fleet import worker_transition
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.factories import LabletDefinitionFactory, WorkerFactory

pytestmark = BROWSER_MARKS

TABLET = (768, 1024)
PAGES = ["/dashboard/", "/dashboard/instances/", "/dashboard/instances/timeline/", "/dashboard/instances/schedule/",
         "/dashboard/definitions/", "/dashboard/fleet/", "/dashboard/fleet/plan/", "/dashboard/reports/",
         "/dashboard/audit/",
         "/dashboard/sessions/", "/dashboard/webhooks/"]


@pytest.fixture
def some_data(users):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", name="cml-tablet-worker-with-a-long-name",
                                                    cml_service_status="available", license_status="registered"),
                               to="running", actor="tests")
    definition = LabletDefinitionFactory(name="a-definition-with-a-rather-long-name-for-a-narrow-screen")
    instance = lablet_instance_create(actor="tests", user=users["admin"], definition_id=definition.public_id,
                                      owner_id="student-with-a-long-owner-id-0001",
                                      timeslot_start=timezone.now() + timedelta(minutes=30))
    return worker, definition, instance


def test_every_page_fits_a_tablet_without_sideways_scrolling(chromium, server, users, some_data):
    _, definition, instance = some_data
    page = log_in(chromium, server, "admin", viewport=TABLET)
    overflowing = {}
    for path in [*PAGES, f"/dashboard/instances/{instance.public_id}/", f"/dashboard/definitions/{definition.public_id}/"]:
        page.goto(server + path)
        playwright_sync.expect(page.locator("h1")).to_be_visible()
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        if width[0] > width[1] + 1:
            overflowing[path] = width
        name = path.strip("/").replace("/", "-").replace("dashboard-", "").replace("dashboard", "overview")
        shot(page, f"tablet-{name}")
        assert page.locator('nav[aria-label="Main"] a', has_text="Instances").is_visible()
    assert overflowing == {}, f"pages wider than the tablet (scrollWidth, clientWidth): {overflowing}"
    page.context.close()
