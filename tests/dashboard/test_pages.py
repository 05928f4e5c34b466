"""The dashboard's pages through Django's test client: who may open what, what they show, and query counts
that do not grow with the rows (docs/dashboard.md)."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletInstance
from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

OVERVIEW, INSTANCES, FLEET, AUDIT = "/dashboard/", "/dashboard/instances/", "/dashboard/fleet/", "/dashboard/audit/"


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def a_worker(**fields) -> Worker:
    """A worker record without an EC2 instance (the pages only read it; drain needs no EC2 call)."""
    return WorkerFactory(aws_instance_id="", **fields)


@pytest.fixture
def roleless_user(db):
    return get_user_model().objects.create_user("nobody", password="pw-nobody")


@pytest.mark.parametrize("path", [OVERVIEW, INSTANCES, FLEET, AUDIT])
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = browser().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=" + path)


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("admin_user", {OVERVIEW: 200, INSTANCES: 200, FLEET: 200, AUDIT: 200}),
        ("operator_user", {OVERVIEW: 200, INSTANCES: 200, FLEET: 200, AUDIT: 200}),
        ("instructor_user", {OVERVIEW: 200, INSTANCES: 200, FLEET: 403, AUDIT: 403}),
        ("roleless_user", {OVERVIEW: 403, INSTANCES: 403, FLEET: 403, AUDIT: 403}),
    ],
)
def test_each_role_opens_only_its_pages(request, who, expected):
    client = browser(request.getfixturevalue(who))
    assert {path: client.get(path).status_code for path in expected} == expected


@pytest.mark.parametrize(
    ("who", "links", "absent"),
    [
        ("instructor_user", ["Overview", "Instances"], ["Fleet", "Audit", "Django admin"]),
        ("operator_user", ["Overview", "Instances", "Fleet", "Audit", "Django admin"], []),
        ("admin_user", ["Overview", "Instances", "Fleet", "Audit", "Django admin"], []),
    ],
)
def test_the_navigation_follows_the_role(request, who, links, absent):
    html = browser(request.getfixturevalue(who)).get(OVERVIEW).content.decode()
    nav = html[html.index('<nav aria-label="Main">'):html.index("</nav>")]
    assert all(f">{label}</a>" in nav for label in links)
    assert not any(f">{label}</a>" in nav for label in absent)


def test_an_instructor_sees_only_the_instances_they_created(instructor_user, other_instructor):
    mine = LabletInstanceFactory(created_by=instructor_user, owner_id="student-mine")
    theirs = LabletInstanceFactory(created_by=other_instructor, owner_id="student-theirs")
    client = browser(instructor_user)
    html = client.get(INSTANCES).content.decode()
    assert mine.public_id in html and theirs.public_id not in html
    assert client.get(f"{INSTANCES}{theirs.public_id}/").status_code == 404
    assert client.post(f"{INSTANCES}{theirs.public_id}/terminate").status_code == 404


def test_the_instance_list_filters_by_status_and_owner(admin_user):
    running = instance_in("running", owner_id="alice")
    pending = instance_in("pending", owner_id="bob")
    client = browser(admin_user)
    html = client.get(INSTANCES + "?status=running").content.decode()
    assert running.public_id in html and pending.public_id not in html
    html = client.get(INSTANCES + "?owner=bob").content.decode()
    assert pending.public_id in html and running.public_id not in html


def test_the_instance_list_marks_badges_for_live_updates(admin_user):
    instance = instance_in("scheduled")
    html = browser(admin_user).get(INSTANCES).content.decode()
    assert f'data-live-instance="{instance.public_id}">scheduled</span>' in html


def test_the_instance_list_paginates(admin_user):
    definition = LabletDefinitionFactory()
    LabletInstanceFactory.create_batch(55, definition=definition)
    client = browser(admin_user)
    first = client.get(INSTANCES).content.decode()
    assert "Page 1 of 2 (55 instances)" in first
    assert client.get(INSTANCES + "?page=2").content.decode().count('data-live-instance="') == 5


def _queries(client, path) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", [OVERVIEW, INSTANCES, FLEET])
def test_pages_make_as_many_queries_for_many_rows_as_for_few(admin_user, path):
    client = browser(admin_user)
    definition = LabletDefinitionFactory()
    worker = worker_transition(worker=a_worker(), to="running", actor="tests")
    instance_in("scheduled", definition=definition, worker=worker)
    _queries(client, path)  # warm caches (content types, session)
    few = _queries(client, path)
    for _ in range(12):
        instance_in("scheduled", definition=LabletDefinitionFactory(), worker=worker_transition(
            worker=a_worker(), to="running", actor="tests"))
    assert _queries(client, path) == few


def test_the_instance_page_shows_the_lifecycle_history(admin_user):
    instance = instance_in("running")
    html = browser(admin_user).get(f"{INSTANCES}{instance.public_id}/").content.decode()
    for event_type in ("lablet_instance.scheduled", "lablet_instance.instantiating", "lablet_instance.running"):
        assert event_type in html


def test_an_instructor_extends_their_instance_from_its_page(instructor_user):
    instance = instance_in("scheduled", created_by=instructor_user)
    old_end = instance.timeslot_end
    response = browser(instructor_user).post(f"{INSTANCES}{instance.public_id}/extend", {"minutes": "30"})
    assert response.status_code == 302
    instance.refresh_from_db()
    assert (instance.timeslot_end - old_end).total_seconds() == 30 * 60


def test_a_refused_extension_is_shown_on_the_page_with_the_input_kept(instructor_user):
    instance = instance_in("scheduled", created_by=instructor_user)  # 2 h slot, definition max 4 h
    response = browser(instructor_user).post(f"{INSTANCES}{instance.public_id}/extend", {"minutes": "600"})
    assert response.status_code == 422
    html = response.content.decode()
    assert 'role="alert"' in html
    assert 'value="600"' in html
    instance.refresh_from_db()
    assert instance.status == "scheduled"


def test_a_refused_transition_is_shown_on_the_page(instructor_user):
    instance = instance_in("scheduled", created_by=instructor_user)
    response = browser(instructor_user).post(f"{INSTANCES}{instance.public_id}/grade")
    assert response.status_code == 409
    assert "cannot go from" in response.content.decode()


def test_terminate_from_the_page_ends_an_instance_without_a_lab(admin_user):
    instance = instance_in("scheduled")
    response = browser(admin_user).post(f"{INSTANCES}{instance.public_id}/terminate", follow=True)
    assert "Terminate requested." in response.content.decode()
    assert LabletInstance.objects.get(pk=instance.pk).status == "terminated"


def test_operators_may_not_act_on_instances(operator_user):
    instance = instance_in("scheduled")
    client = browser(operator_user)
    assert "Terminate</button>" not in client.get(f"{INSTANCES}{instance.public_id}/").content.decode()
    assert client.post(f"{INSTANCES}{instance.public_id}/terminate").status_code == 403
    assert LabletInstance.objects.get(pk=instance.pk).status == "scheduled"


def test_actions_need_the_csrf_token(instructor_user):
    instance = instance_in("scheduled", created_by=instructor_user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(instructor_user)
    assert client.post(f"{INSTANCES}{instance.public_id}/terminate").status_code == 403


def test_the_fleet_page_shows_a_card_per_worker_with_its_load(operator_user):
    worker = worker_transition(worker=a_worker(name="cml-a", cml_service_status="available"), to="running", actor="t")
    instance = instance_in("scheduled", worker=worker)  # holds 4 of 48 cores, 5 of 100 nodes
    html = browser(operator_user).get(FLEET).content.decode()
    assert "cml-a" in html
    assert f'data-live-worker="{worker.public_id}">running</span>' in html
    assert "4/48 cores" in html and "5/100" in html
    assert "Drain</button>" in html
    assert f'data-live-instance="{instance.public_id}"' in html  # the instances on the worker


def test_drain_from_the_fleet_page_stops_placements_on_the_worker(operator_user):
    worker = worker_transition(worker=a_worker(), to="running", actor="tests")
    response = browser(operator_user).post(f"{FLEET}{worker.public_id}/drain", follow=True)
    assert "Draining: no new placements." in response.content.decode()
    assert Worker.objects.get(pk=worker.pk).draining is True


def test_instructors_may_not_drain_workers(instructor_user):
    worker = worker_transition(worker=a_worker(), to="running", actor="tests")
    assert browser(instructor_user).post(f"{FLEET}{worker.public_id}/drain").status_code == 403
    assert Worker.objects.get(pk=worker.pk).draining is False


def test_the_overview_lists_problems(admin_user):
    worker_transition(worker=a_worker(name="sick-worker"), to="failed", actor="tests")
    broken = instance_in("instantiating")
    LabletInstance.objects.filter(pk=broken.pk).update(last_error="CML import failed")
    html = browser(admin_user).get(OVERVIEW).content.decode()
    assert "sick-worker" in html and "CML import failed" in html
    assert "Nothing needs attention" not in html


def test_the_overview_says_when_nothing_needs_attention(instructor_user):
    html = browser(instructor_user).get(OVERVIEW).content.decode()
    assert "Nothing needs attention." in html
    assert "No timeslots coming up" in html


def test_verify_chain_from_the_audit_page_shows_the_result(admin_user):
    instance_in("running")
    response = browser(admin_user).post("/dashboard/audit/verify", follow=True)
    html = response.content.decode()
    assert "Chain intact:" in html
    assert AuditEvent.objects.filter(event_type="audit.verified", success=True).exists()


SCHEDULE = "/dashboard/instances/schedule/"


def test_an_instructor_schedules_a_class_of_twenty_from_pasted_owner_ids(instructor_user):
    definition = LabletDefinitionFactory()
    owners = "\n".join(f"student-{n:02d}" for n in range(20))
    response = browser(instructor_user).post(SCHEDULE, {"definition": definition.public_id, "owners": owners})
    assert response.status_code == 200
    assert "20 of 20 booked" in response.content.decode()
    booked = LabletInstance.objects.filter(definition=definition, created_by=instructor_user)
    assert sorted(booked.values_list("owner_id", flat=True)) == [f"student-{n:02d}" for n in range(20)]


def test_a_roster_file_books_each_owner_and_lists_the_refused_ones(instructor_user):
    definition = LabletDefinitionFactory()
    roster = SimpleUploadedFile("class.csv", b"owner_id,name\nalice,Alice\nbob,Bob\nalice,Alice again\n",
                                content_type="text/csv")
    response = browser(instructor_user).post(SCHEDULE, {"definition": definition.public_id, "roster": roster,
                                                        "duration_minutes": "60"})
    html = response.content.decode()
    assert "2 of 3 booked" in html and "appears more than once" in html
    assert {i.timeslot_end - i.timeslot_start for i in LabletInstance.objects.filter(definition=definition)} == {
        timedelta(minutes=60)}


def test_a_schedule_without_owners_is_refused_in_place_keeping_the_input(instructor_user):
    definition = LabletDefinitionFactory()
    response = browser(instructor_user).post(SCHEDULE, {"definition": definition.public_id, "duration_minutes": "45"})
    assert response.status_code == 422
    html = response.content.decode()
    assert "Give at least one owner id" in html and 'value="45"' in html
    assert not LabletInstance.objects.exists()


def test_a_timeslot_the_service_refuses_is_shown_on_the_page(instructor_user):
    definition = LabletDefinitionFactory()  # max 240 minutes
    response = browser(instructor_user).post(SCHEDULE, {"definition": definition.public_id, "owners": "alice",
                                                        "duration_minutes": "600"})
    assert response.status_code == 422
    assert 'id="schedule-error"' in response.content.decode()
    assert not LabletInstance.objects.exists()


def test_operators_may_not_schedule(operator_user):
    assert browser(operator_user).get(SCHEDULE).status_code == 403
