"""The journal is append-only through the application: the ORM and the admin refuse changes."""

import pytest
from django.test import Client
from django.urls import reverse

from apps.audit.models import AppendOnlyError, AuditEvent

pytestmark = pytest.mark.django_db


def test_saving_an_existing_event_is_refused(chain):
    event = AuditEvent.objects.get(sequence_num=3)
    event.actor = "mallory"

    with pytest.raises(AppendOnlyError):
        event.save()
    assert AuditEvent.objects.get(sequence_num=3).actor == "tests"


def test_deleting_an_event_is_refused(chain):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.get(sequence_num=3).delete()


@pytest.mark.parametrize("change", [
    lambda qs: qs.update(actor="mallory"),
    lambda qs: qs.delete(),
    lambda qs: qs.filter(sequence_num=1).update(success=False),
    lambda qs: qs.filter(sequence_num=1).delete(),
    lambda qs: AuditEvent.objects.update(actor="mallory"),
    lambda qs: AuditEvent.objects.bulk_update(list(qs[:2]), ["actor"]),
])
def test_bulk_updates_and_deletes_are_refused(chain, change):
    with pytest.raises(AppendOnlyError):
        change(AuditEvent.objects.all())

    assert AuditEvent.objects.count() == 10
    assert set(AuditEvent.objects.values_list("actor", flat=True)) == {"tests"}


def test_the_admin_shows_the_journal_read_only(chain, admin_user):
    browser = Client()
    browser.force_login(admin_user)
    event = chain[2]

    changelist = browser.get(reverse("admin:audit_auditevent_changelist"))
    page = browser.get(reverse("admin:audit_auditevent_change", args=[event.pk]))

    assert changelist.status_code == 200
    assert event.event_hash in page.content.decode()
    assert 'name="_save"' not in page.content.decode()
    assert browser.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert browser.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert browser.post(reverse("admin:audit_auditevent_change", args=[event.pk]), {"actor": "mallory"}).status_code == 403
    assert "delete_selected" not in changelist.content.decode()
    assert AuditEvent.objects.get(pk=event.pk).actor == "tests"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_api_offers_no_way_to_change_the_journal(chain, admin_client, method):
    expected = {"/api/audit/events": 405, "/api/audit/chain-root": 405,  # read-only endpoints
                f"/api/audit/events/{chain[0].sequence_num}": 404}  # no endpoint addresses a single event
    for path, status in expected.items():
        response = getattr(admin_client, method)(path, {"actor": "mallory"}, format="json")
        assert response.status_code == status, (path, response.status_code)

    assert set(AuditEvent.objects.filter(sequence_num__isnull=False).values_list("actor", flat=True)) == {"tests"}
