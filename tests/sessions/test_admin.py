"""The admin of the session queues: its pages load for a superuser, everything the services maintain is
read-only there (no add, change or delete), and its actions go through the services."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.sessions.models import LabClaim, LabTeardown, Session, SessionLab, SessionPool
from tests.sessions.conftest import BASE, acquire, create

pytestmark = pytest.mark.django_db
MODELS = [Session, SessionPool, SessionLab, LabTeardown]


@pytest.fixture
def browser(admin_user):
    assert admin_user.is_superuser
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def queue(anon, worker):
    """An active session holding a lab (with a claim), one waiting, one ended (a teardown pending)."""
    active, waiting, ended = (create(anon)["session_id"] for _ in range(3))
    assert acquire(anon, active).status_code == 200
    anon.delete(f"{BASE}/session/{ended}")
    LabTeardown.objects.create(worker=worker, cml_lab_id="old-lab", reason="replaced")
    return {"active": active, "waiting": waiting, "ended": ended}


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_changelist_and_the_object_page_load_for_a_superuser(browser, queue, model):
    obj = model.objects.first()

    changelist = browser.get(_url(model, "changelist"))
    page = browser.get(_url(model, "change", obj.pk))

    assert changelist.status_code == 200
    assert _url(model, "change", obj.pk) in changelist.content.decode()
    assert page.status_code == 200


def test_the_session_changelist_filters_the_live_queue(browser, queue):
    body = browser.get(_url(Session, "changelist") + "?live=yes").content.decode()

    assert queue["active"] in body and queue["waiting"] in body and queue["ended"] not in body


def test_the_lab_page_lists_its_claims(browser, queue):
    lab = SessionLab.objects.get()

    assert queue["active"] in browser.get(_url(SessionLab, "change", lab.pk)).content.decode()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_read_only_and_nothing_can_be_added_changed_or_deleted(browser, queue, admin_user, rf, model):
    model_admin = admin.site._registry[model]
    request = rf.get("/")
    request.user = admin_user
    obj = model.objects.first()
    lifecycle = {f.name for f in model._meta.concrete_fields} - {"id"}

    assert lifecycle <= set(model_admin.get_readonly_fields(request, obj)) | {"id"}
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, obj)
    assert not model_admin.has_delete_permission(request, obj)
    assert browser.get(_url(model, "add")).status_code == 403
    assert browser.post(_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    before = model.objects.filter(pk=obj.pk).values().get()
    assert browser.post(_url(model, "change", obj.pk), {"status": "ended", "position": 7}).status_code == 403
    assert model.objects.filter(pk=obj.pk).values().get() == before


def test_the_session_status_is_shown_but_not_an_input(browser, queue):
    body = browser.get(_url(Session, "change", queue["active"])).content.decode()

    assert 'name="status"' not in body and 'name="position"' not in body and 'name="worker"' not in body
    assert "active" in body


def test_ending_sessions_from_the_admin_promotes_the_next_and_is_audited(browser, queue, admin_user):
    response = browser.post(_url(Session, "changelist"), {
        "action": "end_sessions", "_selected_action": [queue["active"], queue["ended"]], "index": 0})

    assert response.status_code == 302
    assert Session.objects.get(pk=queue["active"]).status == "ended"
    assert Session.objects.get(pk=queue["waiting"]).status == "active"
    assert not LabClaim.objects.exists()  # its claim went with it; the lab stays up
    event = AuditEvent.objects.get(event_type="session.ended", resource_id=queue["active"])
    assert event.actor == admin_user.username and "(admin)" in event.metadata["reason"]


def test_maintaining_a_pool_from_the_admin_reaps_and_promotes(browser, queue):
    Session.objects.filter(pk=queue["active"]).update(last_seen_at=timezone.now() - timedelta(seconds=301))
    pool = SessionPool.objects.get(name="default")

    browser.post(_url(SessionPool, "changelist"), {"action": "maintain_now", "_selected_action": [pool.pk],
                                                   "index": 0})

    assert not Session.objects.filter(pk=queue["active"]).exists()  # reaped (journalled, row deleted)
    assert Session.objects.get(pk=queue["waiting"]).status == "active"


def test_tearing_a_lab_down_from_the_admin_drops_its_claims_and_queues_the_teardown(browser, queue):
    lab = SessionLab.objects.get()
    cml_lab_id = lab.cml_lab_id

    browser.post(_url(SessionLab, "changelist"), {"action": "tear_down", "_selected_action": [lab.pk], "index": 0})

    lab.refresh_from_db()
    assert (lab.status, lab.ref_count, lab.cml_lab_id) == ("empty", 0, "")
    assert not LabClaim.objects.exists()
    assert LabTeardown.objects.filter(cml_lab_id=cml_lab_id, reason="destroyed by an operator").exists()
