"""The reports page (/dashboard/reports/) and its CSV through Django's test client: the figures for a known
fleet history, the chart's data, the CSV byte for byte, date range errors in place, who may open it, a
constant number of queries, and Chart.js served from the project's own static files (docs/dashboard.md)."""

import json
import re
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.workers.models import WorkerRunPeriod, WorkerTemplate
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory

pytestmark = pytest.mark.django_db

REPORTS, CSV = "/dashboard/reports/", "/dashboard/reports/export.csv"
DAY1, DAY2, DAY3 = date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6)
RANGE = {"start": "2024-03-04", "end": "2024-03-06"}
ROOT = Path(__file__).resolve().parents[2]


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt_timezone.utc)


def booking(worker, *, start: datetime, hours: float, cpu: int):
    """A lablet instance placed on `worker` for a timeslot (the report reads timeslots, not states)."""
    return LabletInstanceFactory(definition=LabletDefinitionFactory(cpu_cores=cpu), worker=worker,
                                 timeslot_start=start, timeslot_end=start + timedelta(hours=hours))


@pytest.fixture
def history():
    """Two workers over 4-5 March 2024 (UTC; nothing on the 6th).

    alpha (48 cores, 2.50/h) runs 08-12 and 22-02: 6 h on the 4th, 2 h on the 5th; it hosts 09-11 with
    12 cores and 23-01 with 24 cores. beta (16 cores, no template, so no cost) runs 20-23 on the 5th and
    hosts 21:00-22:30 with 8 cores. A period the day before the range counts nothing."""
    metal = WorkerTemplate.objects.create(name="metal", instance_type="m5zn.metal", cpu_cores=48, memory_gb=192,
                                          storage_gb=500, max_nodes=100, cost_per_hour=Decimal("2.5"))
    alpha = WorkerFactory(name="alpha", aws_instance_id="", cpu_cores=48, template=metal)
    beta = WorkerFactory(name="beta", aws_instance_id="", cpu_cores=16)
    WorkerRunPeriod.objects.bulk_create([
        WorkerRunPeriod(worker=alpha, started_at=at(DAY1, 1) - timedelta(days=1),
                        ended_at=at(DAY1, 5) - timedelta(days=1)),
        WorkerRunPeriod(worker=alpha, started_at=at(DAY1, 8), ended_at=at(DAY1, 12)),
        WorkerRunPeriod(worker=alpha, started_at=at(DAY1, 22), ended_at=at(DAY2, 2)),
        WorkerRunPeriod(worker=beta, started_at=at(DAY2, 20), ended_at=at(DAY2, 23)),
    ])
    booking(alpha, start=at(DAY1, 9), hours=2, cpu=12)
    booking(alpha, start=at(DAY1, 23), hours=2, cpu=24)
    booking(beta, start=at(DAY2, 21), hours=1.5, cpu=8)
    return alpha, beta


def cells(html: str, table_heading: str) -> list[list[str]]:
    """The text of each row's cells (th and td) in the table labelled by `table_heading`'s id."""
    table = html[html.index(f'aria-labelledby="{table_heading}"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in rows]


def chart_data(html: str) -> dict:
    found = re.search(r'<script id="report-chart-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


# --- figures ------------------------------------------------------------------------------------------


def test_it_shows_running_hours_utilisation_and_cost_per_worker_and_per_day_with_totals(operator_user, history):
    alpha, beta = history

    response = browser(operator_user).get(REPORTS, RANGE)

    assert response.status_code == 200
    html = response.content.decode()
    header = ["Running h", "Booked h", "Booked CPU-h", "Utilisation", "Cost"]
    assert cells(html, "workers-heading") == [
        ["Worker", "CPU cores", *header],
        [f"alpha {alpha.public_id}", "48", "8.00", "4.00", "72.00", "18.8 %", "20.00"],  # 72 / (48 × 8)
        [f"beta {beta.public_id}", "16", "3.00", "1.50", "12.00", "25.0 %", "–"],
        ["Total (2 workers)", "", "11.00", "5.50", "84.00", "19.4 %", "20.00"],  # 84 / (48 × 8 + 16 × 3)
    ]
    assert cells(html, "days-heading") == [
        ["Date", "Worker", *header],
        ["Mon 2024-03-04", "alpha", "6.00", "3.00", "48.00", "16.7 %", "15.00"],
        ["Tue 2024-03-05", "alpha", "2.00", "1.00", "24.00", "25.0 %", "5.00"],
        ["Tue 2024-03-05", "beta", "3.00", "1.50", "12.00", "25.0 %", "–"],
        ["2024-03-05", "all workers", "5.00", "2.50", "36.00", "25.0 %", "5.00"],  # 36 / (48 × 2 + 16 × 3)
        ["Total", "2 workers", "11.00", "5.50", "84.00", "19.4 %", "20.00"],
    ]
    assert "(UTC)" in html


def test_the_chart_data_covers_every_day_of_the_range_and_no_script_is_inline(operator_user, history):
    html = browser(operator_user).get(REPORTS, RANGE).content.decode()

    assert chart_data(html) == {
        "labels": ["2024-03-04", "2024-03-05", "2024-03-06"],
        "workers": [{"name": "alpha", "hours": [6.0, 2.0, 0.0]}, {"name": "beta", "hours": [0.0, 3.0, 0.0]}],
        "utilisation": [16.7, 25.0, None],
    }
    assert re.search(r'<canvas id="report-chart" role="img"\s+aria-label="[^"]+running hours', html)
    scripts = [attrs.strip() for attrs in re.findall(r"<script\b([^>]*)>", html)]
    assert 'src="/static/vendor/chart.umd.min.js" defer' in scripts
    assert 'src="/static/js/reports.js" defer' in scripts
    # The production CSP allows no inline script: every <script> is a file or JSON data.
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts)


def test_the_csv_has_a_header_and_one_row_per_worker_per_day_with_the_same_filters(operator_user, history):
    alpha, beta = history

    response = browser(operator_user).get(CSV, RANGE)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="fleet-report-2024-03-04-to-2024-03-06.csv"'
    assert response.content.decode() == (
        "date,worker_id,worker_name,cpu_cores,running_hours,booked_hours,booked_cpu_hours,utilisation_percent,cost,"
        "warm_hours,warm_cost\r\n"
        f"2024-03-04,{alpha.public_id},alpha,48,6.0000,3.0000,48.0000,16.67,15.0000,0.0000,0.0000\r\n"
        f"2024-03-05,{alpha.public_id},alpha,48,2.0000,1.0000,24.0000,25.00,5.0000,0.0000,0.0000\r\n"
        f"2024-03-05,{beta.public_id},beta,16,3.0000,1.5000,12.0000,25.00,,0.0000,\r\n"
    )
    day_two = browser(operator_user).get(CSV, {"start": "2024-03-05", "end": "2024-03-05"}).content.decode()
    assert [line.split(",")[0] for line in day_two.splitlines()] == ["date", "2024-03-05", "2024-03-05"]


def test_the_page_links_the_csv_of_the_range_shown(operator_user, history):
    html = browser(operator_user).get(REPORTS, RANGE).content.decode()

    assert 'href="/dashboard/reports/export.csv?start=2024-03-04&amp;end=2024-03-06" download>Download CSV</a>' in html


def test_a_worker_name_is_never_read_as_a_spreadsheet_formula(operator_user):
    worker = WorkerFactory(name="=HYPERLINK(\"http://x\")", aws_instance_id="", cpu_cores=4)
    WorkerRunPeriod.objects.create(worker=worker, started_at=at(DAY1, 0), ended_at=at(DAY1, 1))

    lines = browser(operator_user).get(CSV, RANGE).content.decode().splitlines()

    assert lines[1] == f'2024-03-04,{worker.public_id},"\'=HYPERLINK(""http://x"")",4,1.0000,0.0000,0.0000,0.00,,0.0000,'


def test_a_range_without_activity_says_so_and_its_csv_is_the_header_only(operator_user, history):
    html = browser(operator_user).get(REPORTS, {"start": "2024-03-07", "end": "2024-03-08"}).content.decode()

    assert "No worker ran and nothing was booked from 2024-03-07 to 2024-03-08." in html
    assert 'id="report-chart"' not in html
    csv_text = browser(operator_user).get(CSV, {"start": "2024-03-07", "end": "2024-03-08"}).content.decode()
    assert csv_text.splitlines() == ["date,worker_id,worker_name,cpu_cores,running_hours,booked_hours,"
                                     "booked_cpu_hours,utilisation_percent,cost,warm_hours,warm_cost"]


def test_the_default_range_is_the_last_14_days_today_included(operator_user):
    today = timezone.localdate()
    first = (today - timedelta(days=13)).isoformat()

    for query in ({}, {"start": "", "end": " "}):
        html = browser(operator_user).get(REPORTS, query).content.decode()
        assert re.search(rf'name="start" value="{first}"', html)
        assert re.search(rf'name="end" value="{today.isoformat()}"', html)
    response = browser(operator_user).get(CSV)
    assert response["Content-Disposition"] == f'attachment; filename="fleet-report-{first}-to-{today}.csv"'


# --- date range errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"start": "2024-03-06", "end": "2024-03-04"}, "end", "Must not be before the start date."),
        ({"start": "2024-02-30", "end": "2024-03-04"}, "start", "Enter a valid date."),
        ({"start": "2024-03-04", "end": "next week"}, "end", "Enter a valid date."),
        ({"start": "2023-01-01", "end": "2024-01-02"}, "end", "The range may cover at most 366 days."),
    ],
)
def test_a_bad_range_is_shown_next_to_its_field_keeping_what_was_typed(operator_user, history, query, field, message):
    response = browser(operator_user).get(REPORTS, query)

    assert response.status_code == 400  # as the timeline's malformed day; the page still explains
    html = response.content.decode()
    assert f'<span class="error" id="id_{field}_error">{message}</span>' in html
    assert re.search(rf'<input type="date" name="{field}" value="{query[field]}"[^>]*aria-invalid="true"'
                     rf'[^>]*aria-describedby="id_{field}_error"', html)
    assert "No report: correct the dates above." in html
    assert 'id="report-chart"' not in html and "Download CSV" not in html
    csv_response = browser(operator_user).get(CSV, query)
    assert csv_response.status_code == 400
    assert csv_response["Content-Type"] == "text/plain; charset=utf-8"
    assert message in csv_response.content.decode()


def test_a_full_year_is_accepted(operator_user, history):
    response = browser(operator_user).get(REPORTS, {"start": "2024-01-01", "end": "2024-12-31"})  # 366 days

    assert response.status_code == 200
    assert len(chart_data(response.content.decode())["labels"]) == 366


# --- access ---------------------------------------------------------------------------------------


@pytest.fixture
def roleless_user(db):
    return get_user_model().objects.create_user("nobody", password="pw-nobody")


@pytest.mark.parametrize("path", [REPORTS, CSV])
def test_anonymous_visitors_are_sent_to_log_in(path):
    response = browser().get(path, RANGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=" + path)


@pytest.mark.parametrize(("who", "status"), [("admin_user", 200), ("operator_user", 200),
                                              ("instructor_user", 403), ("roleless_user", 403)])
def test_operators_and_admins_open_the_reports_and_no_one_else(request, who, status):
    client = browser(request.getfixturevalue(who))

    assert [client.get(REPORTS, RANGE).status_code, client.get(CSV, RANGE).status_code] == [status, status]
    assert client.post(REPORTS).status_code == 405  # read only, whoever asks (the method is checked first)


@pytest.mark.parametrize(("who", "shown"), [("operator_user", True), ("admin_user", True), ("instructor_user", False)])
def test_the_navigation_links_reports_after_fleet_for_operators_and_admins(request, who, shown):
    html = browser(request.getfixturevalue(who)).get("/dashboard/").content.decode()
    nav = re.findall(r">([^<>]+)</a>", html[html.index('<nav aria-label="Main">'):html.index("</nav>")])

    assert ("Reports" in nav) is shown
    if shown:
        assert nav.index("Reports") == nav.index("Fleet") + 1


# --- queries --------------------------------------------------------------------------------------


def test_the_page_and_the_csv_make_as_many_queries_for_many_workers_as_for_two(operator_user, history):
    client = browser(operator_user)
    client.get(REPORTS, RANGE)  # the session and the user are loaded the same way each time after this

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path, RANGE).status_code == 200
        return len(captured)

    before = queries(REPORTS), queries(CSV)
    for n in range(8):
        worker = WorkerFactory(name=f"more-{n}", aws_instance_id="", cpu_cores=32)
        WorkerRunPeriod.objects.create(worker=worker, started_at=at(DAY1, n), ended_at=at(DAY3, n))
        booking(worker, start=at(DAY2, n), hours=3, cpu=4)
    after = queries(REPORTS), queries(CSV)

    assert after == before
    assert "more-7" in client.get(REPORTS, RANGE).content.decode()


# --- the chart library: the project's own static file ------------------------------------------


def test_chart_js_and_the_page_script_are_served_from_the_projects_static_files():
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]["node_modules/chart.js"]["version"]
    client = Client()

    library = client.get("/static/vendor/chart.umd.min.js")
    script = client.get("/static/js/reports.js")

    assert library.status_code == 200, "static/vendor/ is filled by `make setup` (bin/vendor-static.sh)"
    assert script.status_code == 200
    assert library["Content-Type"].startswith("text/javascript")
    head = b"".join(library.streaming_content)[:200].decode()
    assert f"Chart.js v{locked}" in head  # the version package-lock.json pins, copied by `make setup`
    assert b"report-chart-data" in b"".join(script.streaming_content)
    assert client.get("/static/node_modules/chart.js/package.json").status_code == 404  # only what is copied
