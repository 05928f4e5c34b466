"""The timeline page (a day of timeslots per worker), an instantiation's progress on the instance pages and
the fleet's live bars, through Django's test client (docs/dashboard.md)."""

import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.services import lablet_instance_terminate
from apps.lablets.services.instances import lablet_instance_record_progress
from apps.workers.models import Worker
from apps.workers.services.cml import worker_cml_health
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

TIMELINE = "/dashboard/instances/timeline/"
DAY = "2031-03-10"


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def at(hour: int, minute: int = 0, *, day: str = DAY) -> datetime:
    return timezone.make_aware(datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}"))


def running_worker(name: str) -> Worker:
    return worker_transition(worker=WorkerFactory(aws_instance_id="", name=name), to="running", actor="tests")


def booked(state: str, start: datetime, end: datetime, **kwargs):
    return instance_in(state, timeslot_start=start, timeslot_end=end, **kwargs)


def bar(html: str, instance) -> str:
    """The SVG of one instance's bar on the page."""
    found = re.search(rf'<a class="bar" href="/dashboard/instances/{instance.public_id}/".*?</a>', html, re.S)
    assert found, f"no bar for {instance.public_id}"
    return found[0]


def geometry(html: str, instance) -> tuple[str, str, str]:
    found = re.search(r'<svg x="([\d.]+%)" y="(\d+)" width="([\d.]+%)"', bar(html, instance))
    return found[1], found[3], found[2]


def row(html: str, label: str) -> str:
    found = re.search(rf'<tr>\s*<th scope="row">{re.escape(label)}.*?</tr>', html, re.S)
    assert found, f"no row {label!r}"
    return found[0]


# --- the timeline --------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "status"), [("admin_user", 200), ("operator_user", 200), ("instructor_user", 200)])
def test_every_role_opens_the_timeline(request, who, status):
    assert browser(request.getfixturevalue(who)).get(TIMELINE).status_code == status


def test_the_timeline_sends_anonymous_visitors_to_log_in_and_refuses_users_without_a_role():
    response = browser().get(TIMELINE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    nobody = get_user_model().objects.create_user("nobody", password="pw-nobody")
    assert browser(nobody).get(TIMELINE).status_code == 403


def test_it_draws_a_row_per_worker_and_places_each_timeslot_in_the_day(admin_user):
    west, east = running_worker("cml-west"), running_worker("cml-east")
    idle = running_worker("cml-idle")
    morning = booked("running", at(10), at(12), worker=west, owner_id="alice")
    evening = booked("scheduled", at(18), at(21), worker=east, owner_id="bob")
    waiting = booked("pending", at(6), at(7, 30), owner_id="carol")

    html = browser(admin_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert geometry(html, morning) == ("41.667%", "8.333%", "2")  # 10:00 is 10/24 of the day, 2 h wide
    assert geometry(html, evening) == ("75.000%", "12.500%", "2")
    assert geometry(html, waiting) == ("25.000%", "6.250%", "2")
    assert morning.public_id in row(html, "cml-west") and evening.public_id not in row(html, "cml-west")
    assert evening.public_id in row(html, "cml-east")
    assert waiting.public_id in row(html, "unplaced")
    assert 'class="bar"' not in row(html, "cml-idle")  # an idle worker has an empty lane
    labels = re.findall(r'<th scope="row">(\S+)', html)
    assert labels == ["cml-east", "cml-idle", "cml-west", "unplaced"]  # workers by name, then the reservations
    assert f'data-live-worker="{idle.public_id}"' in html
    assert ">alice <tspan" in bar(html, morning)
    assert f'data-live-instance="{morning.public_id}">running</tspan>' in bar(html, morning)
    assert re.findall(r">(\d\d:\d\d)</text>", html) == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00",
                                                        "18:00", "21:00", "00:00"]


def test_it_clips_timeslots_at_the_edges_of_the_day_and_leaves_out_other_days(admin_user):
    worker = running_worker("cml-edge")
    overnight = booked("running", at(22, day="2031-03-09"), at(3), worker=worker)
    late = booked("scheduled", at(23), at(2, day="2031-03-11"), worker=worker)
    elsewhere = booked("scheduled", at(9, day="2031-03-11"), at(10, day="2031-03-11"), worker=worker)

    html = browser(admin_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert geometry(html, overnight)[:2] == ("0.000%", "12.500%")
    assert geometry(html, late)[:2] == ("95.833%", "4.167%")
    assert elsewhere.public_id not in html


def test_overlapping_timeslots_on_a_worker_are_stacked_and_the_row_grows(admin_user):
    worker = running_worker("cml-busy")
    first = booked("scheduled", at(9), at(11), worker=worker)
    second = booked("scheduled", at(10), at(12), worker=worker)
    third = booked("scheduled", at(11), at(13), worker=worker)  # starts when the first ends: its sub-lane again

    html = browser(admin_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert [geometry(html, instance)[2] for instance in (first, second, third)] == ["2", "28", "2"]
    assert 'class="lane" width="100%" height="52"' in row(html, "cml-busy")


def test_cancelled_reservations_are_left_out_but_labs_that_ran_are_kept(admin_user):
    worker = running_worker("cml-history")
    cancelled = lablet_instance_terminate(instance=booked("pending", at(8), at(9)), actor="tests")
    ran = booked("running", at(8), at(9), worker=worker)
    ran = lablet_instance_terminate(instance=ran, actor="tests")

    html = browser(admin_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert cancelled.public_id not in html
    assert f'data-live-instance="{ran.public_id}">terminated</tspan>' in bar(html, ran)


def test_an_instructor_sees_only_their_own_timeslots_and_the_workers_that_hold_them(instructor_user,
                                                                                    other_instructor):
    mine_on, theirs_on = running_worker("cml-mine"), running_worker("cml-theirs")
    running_worker("cml-empty")
    mine = booked("scheduled", at(9), at(10), worker=mine_on, created_by=instructor_user)
    theirs = booked("scheduled", at(9), at(10), worker=theirs_on, created_by=other_instructor)

    html = browser(instructor_user).get(f"{TIMELINE}?day={DAY}").content.decode()

    assert mine.public_id in html and theirs.public_id not in html
    assert re.findall(r'<th scope="row">(\S+)', html) == ["cml-mine"]


def test_it_links_the_days_around_and_marks_now_only_today(admin_user):
    client = browser(admin_user)
    html = client.get(f"{TIMELINE}?day={DAY}").content.decode()
    assert 'href="?day=2031-03-09" rel="prev"' in html and 'href="?day=2031-03-11" rel="next"' in html
    assert 'class="now"' not in html
    running_worker("cml-now")

    today = timezone.localdate()
    html = client.get(TIMELINE).content.decode()

    assert f'value="{today.isoformat()}"' in html
    now = timezone.now()
    x = float(re.search(r'<line class="now" x1="([\d.]+)%"', html)[1])
    midnight = timezone.make_aware(datetime.combine(today, datetime.min.time()))
    assert abs(x - 100 * (now - midnight) / timedelta(days=1)) < 0.5


def test_a_day_that_is_not_a_date_is_refused_on_the_page(admin_user):
    response = browser(admin_user).get(f"{TIMELINE}?day=tomorrow")
    assert response.status_code == 400
    html = response.content.decode()
    assert "Not a day: &#x27;tomorrow&#x27;" in html
    assert f'value="{timezone.localdate().isoformat()}"' in html


def test_the_timeline_makes_as_many_queries_for_many_rows_as_for_few(admin_user):
    client = browser(admin_user)
    booked("running", at(9), at(10), worker=running_worker("cml-q0"))
    path = f"{TIMELINE}?day={DAY}"
    client.get(path)  # warm caches (content types, session)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    few = queries()
    definition = LabletDefinitionFactory()
    for n in range(8):
        worker = running_worker(f"cml-q{n + 1}")
        for hour in (8, 12, 16):
            booked("scheduled", at(hour), at(hour + 2), worker=worker, definition=definition)
        booked("pending", at(n + 1), at(n + 2))
    html = client.get(path).content.decode()
    assert html.count('class="bar"') == 1 + 8 * 4
    assert queries() == few


def test_the_instance_list_links_to_the_timeline(instructor_user):
    html = browser(instructor_user).get("/dashboard/instances/").content.decode()
    assert f'href="{TIMELINE}">Timeline per worker</a>' in html


# --- progress of an instantiation ------------------------------------------------------------------


def test_the_instance_page_shows_the_step_and_the_nodes_booted(admin_user):
    instance = instance_in("instantiating")
    lablet_instance_record_progress(instance=instance, step="booting", actor="tests", nodes_booted=3, nodes_total=5)

    html = browser(admin_user).get(f"/dashboard/instances/{instance.public_id}/").content.decode()

    assert f'<span data-live-step="{instance.public_id}">nodes booting 3/5</span>' in html
    assert re.search(rf'<progress class="boot" data-live-progress="{instance.public_id}" max="5" value="3"'
                     r' aria-label="[^"]+">3/5</progress>', html)
    assert "lablet_instance.progressed" in html and "— nodes booting 3/5" in html  # in the history


def test_the_progress_bar_is_hidden_when_no_nodes_are_booting(admin_user):
    importing = instance_in("instantiating")
    lablet_instance_record_progress(instance=importing, step="importing", actor="tests")
    running = instance_in("running")
    client = browser(admin_user)

    html = client.get(f"/dashboard/instances/{importing.public_id}/").content.decode()
    assert f'<span data-live-step="{importing.public_id}">importing the lab into CML</span>' in html
    assert re.search(rf'data-live-progress="{importing.public_id}"[^>]* hidden>', html)
    html = client.get(f"/dashboard/instances/{running.public_id}/").content.decode()
    assert re.search(rf'data-live-progress="{running.public_id}"[^>]* hidden>', html)


def test_the_instance_list_shows_the_progress_of_instantiating_instances(admin_user):
    instance = instance_in("instantiating")
    lablet_instance_record_progress(instance=instance, step="booting", actor="tests", nodes_booted=1, nodes_total=4)

    html = browser(admin_user).get("/dashboard/instances/").content.decode()

    assert f'data-live-step="{instance.public_id}">nodes booting 1/4</span>' in html
    assert re.search(rf'data-live-progress="{instance.public_id}" max="4" value="1" aria-label="[^"]+">', html)


# --- the fleet's live bars ------------------------------------------------------------------------


def test_the_fleet_bars_are_meters_marked_for_live_updates(operator_user, cml):
    worker = running_worker("cml-bars")
    Worker.objects.filter(pk=worker.pk).update(cml_service_status="available")
    booked("running", at(9), at(10), worker=worker, definition=LabletDefinitionFactory(cpu_cores=12))

    html = browser(operator_user).get("/dashboard/fleet/").content.decode()

    bars = re.search(rf'<dl class="bars" data-live-bars="{worker.public_id}">.*?</dl>', html, re.S)[0]
    assert '<meter min="0" max="100" value="25" data-bar="cpu_held_percent">' in bars  # 12 of 48 cores
    assert '<span data-bar-text="{held_cpu}/{cpu_cores} cores">12/48 cores</span>' in bars
    assert re.search(r'<div data-bar-row="cpu_usage_percent" hidden>', bars)  # no CML reading yet

    cml.configure(cpu_percent=42)
    worker_cml_health(worker=Worker.objects.get(pk=worker.pk))
    cml.configure(cpu_percent=None)
    bars = re.search(r'<dl class="bars" data-live-bars=.*?</dl>', browser(operator_user).get(
        "/dashboard/fleet/").content.decode(), re.S)[0]
    assert '<div data-bar-row="cpu_usage_percent">' in bars
    assert 'value="42" data-bar="cpu_usage_percent"' in bars
    event = AuditEvent.objects.filter(event_type="worker.load_changed", resource_id=worker.public_id).last()
    assert event.metadata["cpu_usage_percent"] == 42 and event.metadata["held_cpu"] == 12
