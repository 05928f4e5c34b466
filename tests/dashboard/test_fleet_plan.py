"""The fleet plan page (/dashboard/fleet/plan/): demand against capacity over 24 hours as chart data, the
planner's planned actions and its recent decisions, who may open it, no inline script (docs/dashboard.md)."""

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from apps.fleet.services import fleet_plan_run
from apps.workers.models import WorkerTemplate
from tests.factories import LabletDefinitionFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db
PAGE = "/dashboard/fleet/plan/"


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def chart_data(html: str) -> dict:
    found = re.search(r'<script id="fleet-plan-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


@pytest.fixture
def busy_fleet(ec2, cml):
    """A 16-core running worker holding 12 cores from in 1 h for 2 h; a pending 8-core reservation in 10 min
    that does not fit beside it; a scalable template (cost 60 a day) whose launch the cost cap holds back, and
    one due in 3 h that is planned."""
    start = timezone.now() + timedelta(hours=1)
    worker = placeable_worker(cpu_cores=16, memory_gb=64, storage_gb=250, max_nodes=30)
    instance_in("scheduled", definition=LabletDefinitionFactory(cpu_cores=12, memory_gb=16), worker=worker,
                timeslot_start=start - timedelta(hours=1), timeslot_end=start + timedelta(hours=2))
    instance_in("pending", definition=LabletDefinitionFactory(cpu_cores=8, memory_gb=16),
                timeslot_start=timezone.now() + timedelta(minutes=10), timeslot_end=start + timedelta(hours=1))
    WorkerTemplate.objects.create(name="elastic", instance_type="m5.2xlarge", ami_id="ami-12c6146b", cpu_cores=16,
                                  memory_gb=64, storage_gb=250, max_nodes=30, cost_per_hour=Decimal("2.5"),
                                  scalable=True, max_cost_per_day=Decimal("10"))
    return worker


def test_it_charts_demand_against_capacity_and_lists_the_actions_and_decisions(operator_user, busy_fleet):
    fleet_plan_run()  # journals the hold: the template's own cost cap (10 a day) is below one worker's 60
    html = browser(operator_user).get(PAGE).content.decode()

    data = chart_data(html)
    assert len(data["labels"]) == 48  # 24 h per 30 min
    assert data["running"][0] == 16 and data["demand"][1] == 12 + 8  # both overlap the second half hour
    assert data["demand"][-1] == 0
    assert "held back" in html and "max_cost_per_day" in html
    assert "fleet.hold" in html, "the recent decisions table shows the journalled hold"
    scripts = [attrs.strip() for attrs in re.findall(r"<script\b([^>]*)>", html)]
    assert 'src="/static/vendor/chart.umd.min.js" defer' in scripts
    assert 'src="/static/js/fleet_plan.js" defer' in scripts
    assert all("src=" in attrs or 'type="application/json"' in attrs for attrs in scripts)


def test_without_a_scalable_template_it_says_the_planner_acts_on_nothing(operator_user, db):
    html = browser(operator_user).get(PAGE).content.decode()
    assert "No worker template is scalable" in html


@pytest.fixture
def roleless_user(db):
    return get_user_model().objects.create_user("nobody", password="pw-nobody")


@pytest.mark.parametrize(("who", "status"), [("admin_user", 200), ("operator_user", 200),
                                              ("instructor_user", 403), ("roleless_user", 403)])
def test_operators_and_admins_open_the_fleet_plan_and_no_one_else(request, who, status):
    client = browser(request.getfixturevalue(who))
    assert client.get(PAGE).status_code == status
    assert client.post(PAGE).status_code == 405


def test_anonymous_visitors_are_sent_to_log_in(db):
    response = browser().get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=" + PAGE)


@pytest.mark.parametrize(("who", "shown"), [("operator_user", True), ("instructor_user", False)])
def test_the_navigation_links_the_fleet_plan_for_operators(request, who, shown):
    html = browser(request.getfixturevalue(who)).get("/dashboard/").content.decode()
    nav = html[html.index('<nav aria-label="Main">'):html.index("</nav>")]
    assert (f'href="{PAGE}"' in nav) is shown


def test_the_power_jobs_starts_and_stops_are_among_the_decisions(operator_user, db):
    from apps.audit.services import audit_record

    worker = placeable_worker()
    audit_record(event_type="worker.idle_stop", actor="system", resource_type="worker", resource_id=worker.public_id,
                 action="worker.idle_stop", metadata={"reason": "idle", "idle_minutes": 42})
    html = browser(operator_user).get(PAGE).content.decode()

    assert "worker.idle_stop" in html and worker.public_id in html
