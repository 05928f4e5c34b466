"""A growing fleet's pages through Django's test client: the fleet page summarises the workers by status
and shows a page of cards (filtered by status and name), the timeline shows a page of workers or one
worker's row, and neither makes more queries for a large fleet than for a small one (docs/dashboard.md)."""

import re
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.dashboard import selectors
from apps.lablets.models import LabletInstance
from apps.lablets.services import lablet_instance_terminate
from apps.lablets.views import timeline
from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

FLEET, TIMELINE = "/dashboard/fleet/", "/dashboard/instances/timeline/"
DAY = "2031-03-10"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def worker(name: str, status: str = "running") -> Worker:
    made = WorkerFactory(aws_instance_id="", name=name, cml_service_status="available")
    return made if status == "pending" else worker_transition(worker=made, to=status, actor="tests")


def at(hour: int, minute: int = 0, *, day: str = DAY) -> datetime:
    return timezone.make_aware(datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}"))


def booked(state: str, start: datetime, end: datetime, **kwargs) -> LabletInstance:
    return instance_in(state, timeslot_start=start, timeslot_end=end, **kwargs)


def cards(html: str) -> list[str]:
    """The worker names of the fleet page's cards, in order."""
    return re.findall(r'<h2 id="w-[^"]+">(\S+) ', html)


def rows(html: str) -> list[str]:
    """The labels of the timeline's rows, in order."""
    return re.findall(r'<th scope="row">(\S+)', html)


def bulk_fleet(count: int, *, day: str = DAY) -> list[Worker]:
    """`count` running workers, each holding two timeslots on `day` (written directly: these tests only read)."""
    fleet = Worker.objects.bulk_create([
        Worker(name=f"bulk-{n:03d}", status="running", cpu_cores=48, memory_gb=192, storage_gb=500, max_nodes=100,
               cml_service_status="available") for n in range(count)])
    definition = LabletDefinitionFactory()
    LabletInstance.objects.bulk_create([
        LabletInstance(definition=definition, owner_id=f"bulk-{n:04d}", status=("scheduled", "running")[n % 2],
                       worker=fleet[n % count], timeslot_start=at(8 + n % 10, day=day),
                       timeslot_end=at(9 + n % 10, day=day), cpu_cores=4, memory_gb=8, storage_gb=50, node_count=5)
        for n in range(2 * count)])
    return fleet


def queries(client, path) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


# --- the fleet page ---------------------------------------------------------------------------------


def test_the_fleet_page_counts_the_workers_by_status_and_pages_the_cards(operator_user, monkeypatch):
    monkeypatch.setattr(selectors, "FLEET_PAGE_SIZE", 3)
    for name in ("cml-a", "cml-b", "cml-c", "cml-d"):
        worker(name)
    for name in ("cml-e", "cml-f"):
        worker(name, "stopped")
    worker("cml-g", "pending")
    worker("cml-gone", "terminated")
    client = browser(operator_user)

    html = client.get(FLEET).content.decode()

    summary = re.search(r'<p class="fleet-summary".*?</p>', html, re.S)[0]
    assert summary.startswith('<p class="fleet-summary" id="fleet-summary">7 workers:')
    assert re.search(r'href="\?status=pending">.*?>pending</span> 1</a>', summary)
    assert re.search(r'href="\?status=running">.*?>running</span> 4</a>', summary)
    assert re.search(r'href="\?status=stopped">.*?>stopped</span> 2</a>', summary)
    assert "status=terminated" not in summary and "cml-gone" not in html
    assert cards(html) == ["cml-a", "cml-b", "cml-c"]
    assert "Page 1 of 3 (7 workers)" in html
    assert 'href="?&amp;page=2" rel="next">Next</a>' in html and 'rel="prev"' not in html

    html = client.get(f"{FLEET}?page=2").content.decode()
    assert cards(html) == ["cml-d", "cml-e", "cml-f"]
    assert 'href="?&amp;page=1" rel="prev"' in html and 'href="?&amp;page=3" rel="next"' in html
    assert cards(client.get(f"{FLEET}?page=3").content.decode()) == ["cml-g"]
    assert cards(client.get(f"{FLEET}?page=99").content.decode()) == ["cml-g"]  # past the end: the last page


def test_the_fleet_page_filters_by_status_and_name_and_pages_within_the_filter(operator_user, monkeypatch):
    monkeypatch.setattr(selectors, "FLEET_PAGE_SIZE", 2)
    for name in ("cml-east-1", "cml-east-2", "cml-east-3", "cml-west-1"):
        worker(name)
    worker("cml-east-4", "stopped")
    client = browser(operator_user)

    html = client.get(f"{FLEET}?status=running").content.decode()
    assert cards(html) == ["cml-east-1", "cml-east-2"]
    assert "Page 1 of 2 (4 workers)" in html
    assert 'href="?status=running&amp;page=2" rel="next"' in html
    assert '<option value="running" selected>running (4)</option>' in html
    assert 'aria-current="true"' in re.search(r'<a href="\?status=running".*?</a>', html)[0]

    html = client.get(f"{FLEET}?q=EAST&status=running&page=2").content.decode()
    assert cards(html) == ["cml-east-3"]
    assert "Page 2 of 2 (3 workers)" in html and 'value="EAST"' in html
    assert cards(client.get(f"{FLEET}?q=east").content.decode()) == ["cml-east-1", "cml-east-2"]
    assert cards(client.get(f"{FLEET}?status=nonsense").content.decode()) == ["cml-east-1", "cml-east-2"]

    html = client.get(f"{FLEET}?q=north").content.decode()
    assert cards(html) == [] and "No worker matches this filter." in html


def test_a_card_keeps_its_actions_and_links_to_its_instances_and_its_timeline(operator_user):
    running = worker("cml-a")
    instance = booked("scheduled", at(9), at(10), worker=running)

    html = browser(operator_user).get(FLEET).content.decode()

    assert f'action="/dashboard/fleet/{running.public_id}/stop"' in html
    assert f'action="/dashboard/fleet/{running.public_id}/drain"' in html
    assert f'<a href="{TIMELINE}?worker={running.public_id}">Timeline</a>' in html
    assert (f'<a href="/dashboard/instances/{instance.public_id}/">{instance.owner_id}</a> <span class="badge '
            f'status-scheduled" data-live-instance="{instance.public_id}">scheduled</span>') in html
    assert browser(operator_user).get(f"/dashboard/instances/{instance.public_id}/").status_code == 200


def test_the_fleet_page_makes_as_many_queries_for_many_workers_as_for_a_few(admin_user):
    client = browser(admin_user)
    booked("running", at(9), at(10), worker=worker("cml-few"))
    queries(client, FLEET)  # warm caches (content types, session)
    few = queries(client, FLEET)

    bulk_fleet(3 * selectors.FLEET_PAGE_SIZE)

    html = client.get(FLEET).content.decode()
    assert len(cards(html)) == selectors.FLEET_PAGE_SIZE
    assert queries(client, FLEET) == few
    assert queries(client, f"{FLEET}?page=3&status=running&q=bulk") == few


# --- the timeline -----------------------------------------------------------------------------------


def test_the_timeline_pages_its_workers_and_ends_with_the_unplaced_reservations(admin_user, monkeypatch):
    monkeypatch.setattr(timeline, "WORKERS_PER_PAGE", 2)
    west, east, north = worker("cml-west"), worker("cml-east"), worker("cml-north")
    on_west = booked("running", at(10), at(12), worker=west)
    on_east = booked("scheduled", at(18), at(21), worker=east)
    on_north = booked("scheduled", at(8), at(9), worker=north)
    waiting = booked("pending", at(6), at(7))
    client = browser(admin_user)

    html = client.get(f"{TIMELINE}?day={DAY}").content.decode()
    assert rows(html) == ["cml-east", "cml-north"]
    assert on_east.public_id in html and on_north.public_id in html
    assert on_west.public_id not in html and waiting.public_id not in html
    assert "4 timeslots on this day" in html and "This page: 2 on workers 1–2 of 3." in html
    assert "Page 1 of 2 (3 workers)" in html and f'href="?day={DAY}&amp;page=2" rel="next"' in html

    html = client.get(f"{TIMELINE}?day={DAY}&page=2").content.decode()
    assert rows(html) == ["cml-west", "unplaced"]
    assert on_west.public_id in html and waiting.public_id in html and on_east.public_id not in html
    assert f'href="?day={DAY}&amp;page=1" rel="prev"' in html


def test_the_worker_filter_shows_one_row_and_the_days_around_keep_it(admin_user):
    west, east = worker("cml-west"), worker("cml-east")
    on_west = booked("running", at(10), at(12), worker=west)
    on_east = booked("scheduled", at(18), at(21), worker=east)
    waiting = booked("pending", at(6), at(7))
    client = browser(admin_user)

    html = client.get(f"{TIMELINE}?day={DAY}&worker={west.public_id}").content.decode()
    assert rows(html) == ["cml-west"]
    assert on_west.public_id in html and on_east.public_id not in html and waiting.public_id not in html
    assert f'<option value="{west.public_id}" selected>cml-west</option>' in html
    assert f'href="?day=2031-03-11&amp;worker={west.public_id}" rel="next"' in html
    assert "Showing cml-west only (1)" in html and 'class="pager" aria-label="Pages"' not in html

    html = client.get(f"{TIMELINE}?day={DAY}&worker=unplaced").content.decode()
    assert rows(html) == ["unplaced"] and waiting.public_id in html and on_west.public_id not in html

    html = client.get(f"{TIMELINE}?day={DAY}").content.decode()  # every worker: a link to each one's row
    assert f'href="?day={DAY}&amp;worker={east.public_id}" aria-label="cml-east only">only</a>' in html


def test_an_unknown_worker_or_one_an_instructor_has_nothing_on_is_refused_on_the_page(admin_user, instructor_user,
                                                                                     other_instructor):
    mine_on, theirs_on = worker("cml-mine"), worker("cml-theirs")
    booked("scheduled", at(9), at(10), worker=mine_on, created_by=instructor_user)
    booked("scheduled", at(9), at(10), worker=theirs_on, created_by=other_instructor)

    response = browser(admin_user).get(f"{TIMELINE}?day={DAY}&worker=wkr-nosuchworker")
    assert response.status_code == 404
    html = response.content.decode()
    assert "No worker &#x27;wkr-nosuchworker&#x27; on this day" in html
    assert rows(html) == ["cml-mine", "cml-theirs"]

    response = browser(instructor_user).get(f"{TIMELINE}?day={DAY}&worker={theirs_on.public_id}")
    assert response.status_code == 404 and rows(response.content.decode()) == ["cml-mine"]
    html = browser(instructor_user).get(f"{TIMELINE}?day={DAY}").content.decode()
    assert theirs_on.public_id not in html  # not in the worker filter's choices either


def test_a_terminated_worker_that_held_a_timeslot_that_day_keeps_its_row(admin_user):
    gone = worker("cml-gone")
    ran = booked("running", at(8), at(9), worker=gone)
    lablet_instance_terminate(instance=ran, actor="tests")
    worker_transition(worker=Worker.objects.get(pk=gone.pk), to="terminated", actor="tests")
    worker("cml-idle")

    html = browser(admin_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert rows(html) == ["cml-gone", "cml-idle"] and ran.public_id in html
    assert rows(browser(admin_user).get(f"{TIMELINE}?day=2031-03-11").content.decode()) == ["cml-idle"]


def test_the_timeline_makes_as_many_queries_for_many_workers_as_for_a_few(admin_user):
    client = browser(admin_user)
    booked("running", at(9), at(10), worker=worker("cml-few"))
    path = f"{TIMELINE}?day={DAY}"
    queries(client, path)  # warm caches (content types, session)
    few = queries(client, path)

    fleet = bulk_fleet(2 * timeline.WORKERS_PER_PAGE)

    html = client.get(path).content.decode()
    assert len(rows(html)) == timeline.WORKERS_PER_PAGE
    assert html.count('class="bar"') == 2 * timeline.WORKERS_PER_PAGE  # bulk-000… come before cml-few
    assert queries(client, path) == few
    assert queries(client, f"{path}&page=2") == few
    assert queries(client, f"{path}&worker={fleet[7].public_id}") == few
