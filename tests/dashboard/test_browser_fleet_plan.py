"""The fleet plan page in Debian's Chromium against a real server (bin/serve all; fixtures:
tests/dashboard/conftest.py): an operator opens Fleet plan from the navigation, Chart.js (the project's own
static file) draws demand against capacity from the page's JSON under the production CSP, and the planned
actions are listed. Screenshot: var/screenshots/fleet-plan.png (docs/img/dashboard-fleet-plan.png)."""

import re
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from apps.workers.models import WorkerTemplate
from apps.workers.services.fleet import worker_transition
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.dashboard.test_browser_reports import RECORD_CSP_VIOLATIONS, with_production_csp
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory, instance_in

pytestmark = BROWSER_MARKS

CHART = "Chart.getChart(document.getElementById('fleet-plan-chart'))"


def a_day_of_bookings():
    """Two running 48-core workers and a stopped one, a day of classes on them, and an afternoon class of
    reservations they cannot hold: the scalable template's launches are planned for it."""
    WorkerTemplate.objects.create(name="elastic", instance_type="m5zn.metal", ami_id="ami-12c6146b", cpu_cores=48,
                                  memory_gb=192, storage_gb=500, max_nodes=100, cost_per_hour=Decimal("4.1"),
                                  scalable=True)
    workers = []
    for n, final in enumerate(("running", "running", "stopped")):
        worker = WorkerFactory(name=f"cml-plan-{n}", aws_instance_id="", cpu_cores=48, memory_gb=192,
                               cml_service_status="available", license_status="registered")
        for step in ("running", "stopped")[: 1 if final == "running" else 2]:
            worker = worker_transition(worker=worker, to=step, actor="tests")
        workers.append(worker)
    lab = LabletDefinitionFactory(name="plan-lab", cpu_cores=8, memory_gb=16)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for hour in range(0, 12, 2):
        for seat in range(4):
            instance_in("scheduled", definition=lab, worker=workers[seat % 2],
                        timeslot_start=start + timedelta(hours=hour), timeslot_end=start + timedelta(hours=hour + 2))
    for seat in range(30):
        LabletInstanceFactory(definition=lab, timeslot_start=start + timedelta(hours=5),
                              timeslot_end=start + timedelta(hours=8))


def test_an_operator_reads_demand_against_capacity_and_the_planned_launches(chromium, server, users):
    a_day_of_bookings()
    page = log_in(chromium, server, "operator")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    page.route(re.compile(r"/dashboard/fleet/plan/(\?.*)?$"), with_production_csp)

    page.get_by_role("link", name="Fleet plan").click()
    playwright_sync.expect(page.get_by_role("heading", name="Fleet plan", exact=True)).to_be_visible()
    page.wait_for_function(f"() => window.Chart && {CHART}")
    assert page.evaluate("window.__csp || []") == []
    drawn = page.evaluate(f"""() => {{
        const chart = {CHART};
        const pixels = chart.canvas.getContext('2d').getImageData(0, 0, chart.canvas.width, chart.canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return {{labels: chart.data.labels.length, datasets: chart.data.datasets.map(d => d.label), painted}};
    }}""")
    assert drawn["labels"] == 48
    assert drawn["datasets"] == ["Demand", "Running", "+ stopped and launching", "+ planned launches"]
    assert drawn["painted"] > 10_000
    actions = page.locator("table[aria-labelledby='actions-heading'] tbody tr")
    assert actions.count() >= 1 and "launch" in actions.first.inner_text()
    shot(page, "fleet-plan")
    assert errors == []
    page.context.close()
