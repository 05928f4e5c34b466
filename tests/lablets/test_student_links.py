"""A student's own link (docs/api.md#student-links): made, rotated and revoked through the API, opening the
student page of its one instance and nothing else, until revoked, expired or the instance ends; rate limited
per address, journalled when used; the class CSV export and the roster booking's include_links."""

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.audit.models import AuditEvent
from apps.lablets.models import StudentLink
from apps.lablets.services import lablet_instance_transition
from apps.lablets.services.student_links import hash_token, student_link_instance
from tests.factories import LabletDefinitionFactory, instance_in

pytestmark = pytest.mark.django_db


def link_path(instance) -> str:
    return f"/api/lablet-instances/{instance.public_id}/student-link"


def make_link(api, instance, **body) -> str:
    """POST the link; returns the token (the path after /s/)."""
    response = api.post(link_path(instance), body, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    url = response.json()["url"]
    assert url.startswith("http://testserver/s/sl_")
    return url.rsplit("/s/", 1)[1]


def journal(instance, event_type):
    return list(AuditEvent.objects.filter(resource_id=instance.public_id, event_type=event_type).order_by("pk"))


@pytest.fixture
def browser():
    return Client()


def test_the_link_opens_its_own_instance_and_no_other(instructor_client, instructor_user, browser):
    mine = instance_in("running", created_by=instructor_user)
    other = instance_in("running", created_by=instructor_user)
    token = make_link(instructor_client, mine)
    assert len(token) >= 3 + 32  # 192 random bits after the prefix
    assert StudentLink.objects.get().token_hash == hash_token(token)  # only the SHA-256 is kept

    page = browser.get(f"/s/{token}")
    assert page.status_code == 200
    assert mine.public_id in page.content.decode() and "running" in page.content.decode()
    assert other.public_id not in page.content.decode()
    own = browser.get(f"/s/{token}/instances/{mine.public_id}")
    assert own.status_code == 200 and own.json()["id"] == mine.public_id and own.json()["seconds_left"] > 0
    assert browser.get(f"/s/{token}/instances/{other.public_id}").status_code == 404
    # The token is no credential anywhere else: the API does not know it, the dashboard asks for a login.
    for instance in (mine, other):
        assert browser.get(f"/api/lablet-instances/{instance.public_id}",
                           HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
        assert browser.get(f"/dashboard/instances/{instance.public_id}/").status_code == 302
    assert student_link_instance(token) == mine
    assert browser.get("/s/sl_" + "x" * 32).status_code == 404  # a token no link has

    shown = instructor_client.get(link_path(mine)).json()
    assert shown["exists"] and shown["status"] == "active" and "url" not in shown
    assert token not in str(shown)


def test_revoke_and_rotation_stop_the_link(instructor_client, instructor_user, browser):
    instance = instance_in("running", created_by=instructor_user)
    first = make_link(instructor_client, instance)
    second = make_link(instructor_client, instance)  # rotation: the first stops working
    gone = browser.get(f"/s/{first}")
    assert gone.status_code == 410 and "no longer valid" in gone.content.decode()
    assert browser.get(f"/s/{second}").status_code == 200

    assert instructor_client.delete(link_path(instance)).status_code == 204
    assert browser.get(f"/s/{second}").status_code == 410
    assert browser.get(f"/s/{second}/instances/{instance.public_id}").status_code == 410
    assert student_link_instance(second) is None
    assert instructor_client.get(link_path(instance)).json()["status"] == "revoked"

    rows = [e.event_type for e in AuditEvent.objects.filter(resource_id=instance.public_id,
                                                           event_type__startswith="student_link.created")]
    assert rows == ["student_link.created"]
    assert len(journal(instance, "student_link.rotated")) == 1
    assert len(journal(instance, "student_link.revoked")) == 1
    for event in AuditEvent.objects.filter(event_type__startswith="student_link."):
        assert first not in str(event.metadata) and second not in str(event.metadata)


def test_teardown_ends_the_link(instructor_client, instructor_user, browser):
    instance = instance_in("running", created_by=instructor_user)
    token = make_link(instructor_client, instance)
    lablet_instance_transition(instance=instance, to="terminated", actor="tests")
    response = browser.get(f"/s/{token}")
    assert response.status_code == 410 and "The lab has ended." in response.content.decode()
    assert instructor_client.get(link_path(instance)).json()["status"] == "ended"


def test_the_link_expires_at_the_slot_end_plus_the_grace_or_its_own_time(instructor_client, instructor_user,
                                                                        browser, settings):
    settings.STUDENT_LINK_GRACE_MINUTES = 45
    instance = instance_in("running", created_by=instructor_user)
    token = make_link(instructor_client, instance)
    expires = parse_datetime(instructor_client.get(link_path(instance)).json()["expires_at"])
    assert expires == instance.timeslot_end + timedelta(minutes=45)
    StudentLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = browser.get(f"/s/{token}")
    assert response.status_code == 410 and "expired" in response.content.decode()

    soon = timezone.now() + timedelta(minutes=5)
    make_link(instructor_client, instance, expires_at=soon.isoformat())
    assert StudentLink.objects.get(revoked_at__isnull=True).expires_at == soon
    past = instructor_client.post(link_path(instance), {"expires_at": "2000-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 422


def test_the_student_page_is_rate_limited_per_address(instructor_client, instructor_user, browser, settings):
    settings.STUDENT_LINK_RATE_LIMIT = "3/min"
    instance = instance_in("running", created_by=instructor_user)
    token = make_link(instructor_client, instance)
    assert [browser.get(f"/s/{token}").status_code for _ in range(3)] == [200, 200, 200]
    refused = browser.get(f"/s/{token}/instances/{instance.public_id}")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert browser.get("/s/sl_unknown", REMOTE_ADDR="127.0.0.9").status_code == 404  # another address: counted apart
    assert Client(REMOTE_ADDR="127.0.0.8").get(f"/s/{token}").status_code == 200


def test_use_is_journalled_at_first_use_and_then_at_most_once_per_period(instructor_client, instructor_user, browser):
    instance = instance_in("running", created_by=instructor_user)
    token = make_link(instructor_client, instance)
    for _ in range(5):
        assert browser.get(f"/s/{token}/instances/{instance.public_id}").status_code == 200
    used = journal(instance, "student_link.used")
    assert len(used) == 1 and used[0].metadata["first_use"] is True
    assert used[0].actor.startswith("student-link:sl_") and token not in str(used[0].metadata)

    StudentLink.objects.update(use_journalled_at=timezone.now() - timedelta(minutes=16))
    browser.get(f"/s/{token}")
    browser.get(f"/s/{token}")
    used = journal(instance, "student_link.used")
    assert len(used) == 2 and used[1].metadata["first_use"] is False


def test_a_student_extends_within_the_definitions_limits(instructor_client, instructor_user, browser):
    definition = LabletDefinitionFactory(default_duration_minutes=120, max_duration_minutes=170)
    instance = instance_in("running", created_by=instructor_user, definition=definition)  # a 120-minute slot
    token = make_link(instructor_client, instance)
    assert "more minutes" in browser.get(f"/s/{token}").content.decode()
    assert browser.post(f"/s/{token}/extend").status_code == 200
    instance.refresh_from_db()
    assert instance.timeslot_end - instance.timeslot_start == timedelta(minutes=150)
    assert browser.post(f"/s/{token}/extend").status_code == 200  # capped at the max duration
    instance.refresh_from_db()
    assert instance.timeslot_end - instance.timeslot_start == timedelta(minutes=170)
    refused = browser.post(f"/s/{token}/extend")
    assert refused.status_code == 409 and "cannot be extended" in refused.content.decode()
    extended = journal(instance, "lablet_instance.extended")
    assert [e.actor for e in extended] == [f"student-link:{token[:10]}"] * 2


def test_the_class_csv_exports_every_link_new_ones_for_those_without(instructor_client, instructor_user):
    definition = LabletDefinitionFactory()
    start = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    roster = [instance_in("scheduled", created_by=instructor_user, definition=definition, timeslot_start=start,
                          timeslot_end=start + timedelta(hours=2), owner_id=f"student-{n}") for n in range(3)]
    instance_in("scheduled", definition=definition, timeslot_start=start, timeslot_end=start + timedelta(hours=2),
                owner_id="someone-elses")  # another instructor's: not in the export
    kept = make_link(instructor_client, roster[0])
    page = Client()
    page.force_login(instructor_user)
    form = {"definition": definition.public_id, "timeslot_start": start.isoformat()}

    response = page.post("/dashboard/instances/student-links.csv", form)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["owner_id"] for r in rows] == ["student-0", "student-1", "student-2"]
    assert [r["instance_id"] for r in rows] == [i.public_id for i in roster]
    assert rows[0]["url"] == "" and "kept" in rows[0]["note"]
    for row in rows[1:]:
        assert Client().get(row["url"].replace("http://testserver", "")).status_code == 200
        assert row["expires_at"]
    assert Client().get(f"/s/{kept}").status_code == 200  # not rotated

    rotated = list(csv.DictReader(io.StringIO(page.post("/dashboard/instances/student-links.csv",
                                                        {**form, "rotate": "1"}).content.decode())))
    assert all(r["url"] for r in rotated)
    assert Client().get(f"/s/{kept}").status_code == 410


def test_the_roster_booking_answers_each_students_link_when_asked(instructor_client, instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    start = timezone.now() + timedelta(hours=2)
    body = {"definition_id": definition.public_id, "owner_ids": ["s-1", "s-2"], "timeslot_start": start.isoformat()}

    plain = instructor_client.post("/api/lablet-instances/bulk", body, format="json")
    assert plain.status_code == 201 and "student_link" not in plain.json()["results"][0]
    assert not StudentLink.objects.exists()

    body["owner_ids"] = ["s-3", "s-4"]
    response = instructor_client.post("/api/lablet-instances/bulk", {**body, "include_links": True}, format="json")
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    for row in response.json()["results"]:
        url = row["student_link"]["url"]
        opened = Client().get(url.replace("http://testserver", "") + f"/instances/{row['instance']['id']}")
        assert opened.status_code == 200 and opened.json()["id"] == row["instance"]["id"]
    assert StudentLink.objects.count() == 2
