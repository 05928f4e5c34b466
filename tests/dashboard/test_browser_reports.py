"""The reports page in Debian's Chromium against a real server (bin/serve all; fixtures: tests/dashboard/conftest.py): an
operator opens Reports from the navigation, Chart.js (the project's own static file) draws the chart from the
page's JSON, another range is chosen in the form, a reversed one is refused in place, and Download CSV saves
the rows of the range shown. Screenshot: var/screenshots/reports.png (docs/img/dashboard-reports.png)."""

import csv
import io
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from django.utils import timezone

from apps.workers.models import WorkerRunPeriod, WorkerTemplate
from apps.core.csp import build_policy
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory

pytestmark = BROWSER_MARKS

CHART = "Chart.getChart(document.getElementById('report-chart'))"
RECORD_CSP_VIOLATIONS = """document.addEventListener('securitypolicyviolation', (e) => {
    (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });"""


def with_production_csp(route) -> None:
    """The page as the production profile sends it: the test server runs the development settings."""
    response = route.fetch()
    route.fulfill(response=response, headers={**response.headers, "content-security-policy": build_policy()})


def local(day: date, hour: float) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone()) + timedelta(hours=hour)


def two_weeks_of_fleet_history(today: date) -> set[tuple[str, date]]:
    """Three workers over the 13 days before today (nothing today): run periods and the instances booked
    on them. Returns the (worker name, day) pairs with activity, the rows the report must have."""
    metal = WorkerTemplate.objects.create(name="metal-b", instance_type="m5zn.metal", cpu_cores=48, memory_gb=192,
                                          storage_gb=500, max_nodes=100, cost_per_hour=Decimal("2.5"))
    workers = [WorkerFactory(name="cml-worker-01", aws_instance_id="", cpu_cores=48, template=metal),
               WorkerFactory(name="cml-worker-02", aws_instance_id="", cpu_cores=48, template=metal),
               WorkerFactory(name="cml-worker-03", aws_instance_id="", cpu_cores=16)]
    labs = [LabletDefinitionFactory(name=f"report-lab-{cpu}", cpu_cores=cpu) for cpu in (8, 16, 24)]
    active = set()
    for back in range(13, 0, -1):
        day = today - timedelta(days=back)
        plan = [(workers[0], 8, 6 + (back % 4) * 2)]  # 6 to 12 hours from 08:00
        if day.weekday() < 5:
            plan.append((workers[1], 9, 8))  # office hours on weekdays
        if back % 3 == 0:
            plan.append((workers[2], 13, 3))
        for index, (worker, begin, hours) in enumerate(plan):
            WorkerRunPeriod.objects.create(worker=worker, started_at=local(day, begin),
                                           ended_at=local(day, begin + hours))
            small = worker.cpu_cores < 24
            for slot in range(1 if small else 1 + (back + index) % 3):  # 1 to 3 labs of 2 hours in the period
                LabletInstanceFactory(definition=labs[0 if small else (back + slot) % 3], worker=worker,
                                      timeslot_start=local(day, begin + 2 * slot),
                                      timeslot_end=local(day, begin + 2 * slot + 2))
            active.add((worker.name, day))
    return active


def test_an_operator_reads_the_reports_chart_changes_the_range_and_downloads_the_csv(chromium, server, users):
    today = timezone.localdate()
    active = two_weeks_of_fleet_history(today)
    page = log_in(chromium, server, "operator")
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    page.route(re.compile(r"/dashboard/reports/(\?.*)?$"), with_production_csp)

    page.get_by_role("link", name="Reports").click()
    playwright_sync.expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()
    assert page.get_by_label("From").input_value() == (today - timedelta(days=13)).isoformat()
    assert page.get_by_label("To (included)").input_value() == today.isoformat()
    page.wait_for_function(f"() => window.Chart && {CHART}")
    assert page.evaluate("window.__csp || []") == []  # Chart.js and reports.js run under script-src 'self'
    drawn = page.evaluate(f"""() => {{
        const chart = {CHART};
        const canvas = chart.canvas;
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return {{labels: chart.data.labels.length, datasets: chart.data.datasets.map(d => [d.type, d.label]),
                 painted, height: canvas.clientHeight, ariaLabel: canvas.getAttribute('aria-label')}};
    }}""")
    assert drawn["labels"] == 14
    assert drawn["datasets"] == [["bar", "cml-worker-01"], ["bar", "cml-worker-02"], ["bar", "cml-worker-03"],
                                 ["line", "Utilisation %"]]
    assert drawn["painted"] > 10_000 and drawn["height"] > 200  # bars, axes and a legend, not a blank box
    assert "running hours" in drawn["ariaLabel"]
    assert page.locator("table[aria-labelledby='days-heading'] tbody tr:not(.subtotal)").count() == len(active)
    shot(page, "reports")

    first = today - timedelta(days=4)
    page.get_by_label("From").fill(first.isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/dashboard/reports/?start={first.isoformat()}&end={today.isoformat()}")
    page.wait_for_function(f"() => window.Chart && {CHART} && {CHART}.data.labels.length === 5")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    download = info.value
    assert download.suggested_filename == f"fleet-report-{first.isoformat()}-to-{today.isoformat()}.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert {(row["worker_name"], date.fromisoformat(row["date"])) for row in rows} == {
        (name, day) for name, day in active if day >= first}
    assert all(float(row["running_hours"]) > 0 and row["utilisation_percent"] for row in rows)

    page.get_by_label("To (included)").fill((first - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Show").click()
    playwright_sync.expect(page.locator("#id_end_error")).to_have_text("Must not be before the start date.")
    assert page.get_by_label("From").input_value() == first.isoformat()  # kept as typed
    assert page.locator("#report-chart").count() == 0
    assert errors == []
    page.context.close()
