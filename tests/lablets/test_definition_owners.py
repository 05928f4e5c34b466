"""Lablet definitions have an owner (security review, issue 19, item 6): every role reads them, an instructor
changes only the ones they own, admins all; a sync copies only the definition's reference lab or the CML lab
of an instance the caller sees. Through the API (API keys), the dashboard pages and the admin, against the CML
simulator where a lab is copied."""

import html
import importlib

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers import cml as cml_gateway
from apps.workers.services.cml import cml_credentials
from tests.factories import TOPOLOGY, LabletDefinitionFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db

DEFINITIONS = "/api/lablet-definitions"
NOT_OWNER = "Only the definition's owner or an admin may change it."
NEW_DEFINITION = {"name": "ospf", "version": "1.0.0", "cml_lab_yaml": TOPOLOGY,
                  "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10, "node_count": 2}}


@pytest.fixture(autouse=True)
def _tasks_run_inline(monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # a sync's task runs in the request, at once


def _stored(definition) -> dict:
    row = LabletDefinition.objects.get(pk=definition.pk)
    return {"description": row.description, "content_hash": row.content_hash, "is_active": row.is_active,
            "reference_lab_id": row.reference_lab_id}


def _refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type="api_call.refused").order_by("id"))


def _lab(worker, title="lab") -> str:
    return cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=TOPOLOGY, title=title)


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- owner -------------------------------------------------------------------------------------------

def test_whoever_creates_a_definition_owns_it_and_the_api_shows_the_owner(instructor_client, instructor_user,
                                                                          other_instructor_client):
    created = instructor_client.post(DEFINITIONS, NEW_DEFINITION, format="json")

    assert created.status_code == 201 and created.json()["owner"] == "instructor1"
    assert LabletDefinition.objects.get(public_id=created.json()["id"]).owner == instructor_user
    read = other_instructor_client.get(f"{DEFINITIONS}/{created.json()['id']}")  # reads stay open to every role
    assert read.status_code == 200 and read.json()["owner"] == "instructor1"
    listed = other_instructor_client.get(DEFINITIONS).json()["lablet_definitions"]
    assert [d["owner"] for d in listed] == ["instructor1"]


def test_the_dashboard_form_gives_the_new_definition_to_who_saves_it(other_instructor):
    form = {"name": "ospf", "version": "1.0.0", "cml_lab_yaml": TOPOLOGY, "cpu_cores": "2", "memory_gb": "4",
            "storage_gb": "10", "node_count": "2", "default_duration_minutes": "60", "max_duration_minutes": "120",
            "idle_timeout_minutes": "20"}

    assert _browser(other_instructor).post("/dashboard/definitions/new/", form).status_code == 302

    assert LabletDefinition.objects.get(name="ospf").owner == other_instructor


# --- API writes ----------------------------------------------------------------------------------------

def test_another_instructors_put_delete_and_sync_are_refused_journalled_and_change_nothing(
        other_instructor_client, instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user, reference_lab_id="lab-1")
    before = _stored(definition)
    url = f"{DEFINITIONS}/{definition.public_id}"

    answers = [other_instructor_client.put(url, {"description": "mine now", "is_active": False}, format="json"),
               other_instructor_client.delete(url),
               other_instructor_client.post(f"{url}/sync", {}, format="json")]

    for response in answers:
        assert response.status_code == 403, response.content
        assert response["Content-Type"].startswith("application/problem+json")
        assert response.json()["detail"] == NOT_OWNER
    assert _stored(definition) == before
    refused = _refusals()
    assert [(e.metadata["method"], e.metadata["status"], e.error) for e in refused] == [
        ("PUT", 403, NOT_OWNER), ("DELETE", 403, NOT_OWNER), ("POST", 403, NOT_OWNER)]
    assert all(e.actor.startswith("instructor2 (apikey:") for e in refused)
    assert not AuditEvent.objects.filter(resource_id=definition.public_id).exists()


def test_the_owner_and_an_admin_change_it(instructor_client, admin_client, instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    url = f"{DEFINITIONS}/{definition.public_id}"

    assert instructor_client.put(url, {"description": "by the owner"}, format="json").status_code == 200
    assert admin_client.put(url, {"description": "by an admin"}, format="json").status_code == 200
    assert _stored(definition)["description"] == "by an admin"
    assert admin_client.delete(url).status_code == 204
    assert not LabletDefinition.objects.filter(pk=definition.pk).exists()


def test_an_admins_key_narrowed_to_instructor_changes_only_the_admins_own(admin_user, instructor_user):
    from apps.identity.services import api_key_create
    from rest_framework.test import APIClient

    _, raw = api_key_create(user=admin_user, actor="tests", role="instructor")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    theirs = LabletDefinitionFactory(created_by=instructor_user)
    own = LabletDefinitionFactory(created_by=admin_user)

    assert client.put(f"{DEFINITIONS}/{theirs.public_id}", {"description": "x"}, format="json").status_code == 403
    assert client.put(f"{DEFINITIONS}/{own.public_id}", {"description": "x"}, format="json").status_code == 200


def test_a_definition_whose_owner_is_deleted_is_changed_by_admins_only(instructor_user, other_instructor_client,
                                                                       admin_client):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    instructor_user.delete()
    url = f"{DEFINITIONS}/{definition.public_id}"

    assert LabletDefinition.objects.get(pk=definition.pk).owner is None
    assert other_instructor_client.get(url).json()["owner"] is None
    assert other_instructor_client.put(url, {"description": "x"}, format="json").status_code == 403
    assert admin_client.put(url, {"description": "x"}, format="json").status_code == 200


def test_the_migration_gives_existing_definitions_to_their_creator(instructor_user):
    from django.apps import apps

    migration = importlib.import_module("apps.lablets.migrations.0005_definition_owner")
    made = LabletDefinitionFactory(created_by=instructor_user, owner=None)
    imported = LabletDefinitionFactory(created_by=None, owner=None)  # by a command: no creator recorded

    migration.owner_is_the_creator(apps, None)

    assert LabletDefinition.objects.get(pk=made.pk).owner == instructor_user
    assert LabletDefinition.objects.get(pk=imported.pk).owner is None


# --- which lab a sync copies ------------------------------------------------------------------------------

def test_sync_from_a_lab_that_is_not_the_reference_nor_a_visible_instances_is_refused(
        instructor_client, instructor_user, other_instructor, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    before = _stored(definition)
    stray = _lab(worker, "someone's lab, no instance")  # e.g. a lab a user made in CML itself
    theirs = _lab(worker, "another instructor's instance")
    instance_in("running", worker=worker, cml_lab_id=theirs, created_by=other_instructor)
    url = f"{DEFINITIONS}/{definition.public_id}/sync"

    for lab_id in (stray, theirs, "no-such-lab"):  # an unknown lab gets the same answer: nothing is revealed
        response = instructor_client.post(url, {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")
        assert response.status_code == 403, response.content
        assert "lab_id" in response.json()["errors"]
    assert _stored(definition) == before
    assert [e.metadata["status"] for e in _refusals()] == [403, 403, 403]


def test_sync_from_the_callers_instance_lab_then_from_the_reference_lab_is_accepted(
        instructor_client, instructor_user, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    lab_id = _lab(worker)
    instance_in("running", worker=worker, cml_lab_id=lab_id, created_by=instructor_user)
    url = f"{DEFINITIONS}/{definition.public_id}/sync"

    first = instructor_client.post(url, {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")
    assert first.status_code == 200, first.content
    assert (first.json()["reference_lab_id"], first.json()["reference_worker_id"]) == (lab_id, worker.public_id)

    # Now the reference lab: accepted by default or named, even once no instance holds it.
    LabletInstance.objects.filter(cml_lab_id=lab_id).delete()
    assert instructor_client.post(url, {}, format="json").status_code == 200
    named = instructor_client.post(url, {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")
    assert named.status_code == 200


def test_an_admin_syncs_from_any_instances_lab_but_not_from_a_stray_one(admin_client, instructor_user, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    instance_lab = _lab(worker)
    instance_in("running", worker=worker, cml_lab_id=instance_lab, created_by=instructor_user)
    url = f"{DEFINITIONS}/{definition.public_id}/sync"

    stray = admin_client.post(url, {"lab_id": _lab(worker, "stray"), "worker_id": worker.public_id}, format="json")
    accepted = admin_client.post(url, {"lab_id": instance_lab, "worker_id": worker.public_id}, format="json")

    assert stray.status_code == 403
    assert accepted.status_code == 200 and accepted.json()["reference_lab_id"] == instance_lab


# --- the dashboard and the admin ----------------------------------------------------------------------

def test_the_dashboard_refuses_another_instructors_edit_deprecate_and_sync(instructor_user, other_instructor):
    definition = LabletDefinitionFactory(created_by=instructor_user, reference_lab_id="lab-1")
    before = _stored(definition)
    page = f"/dashboard/definitions/{definition.public_id}/"
    client = _browser(other_instructor)

    shown = client.get(page).content.decode()
    assert "Only its owner, instructor1, or an admin may change this definition" in shown
    assert "/edit/" not in shown and "Deprecate" not in shown and "Sync from CML" not in shown
    assert "New version" in shown  # a copy of their own is open to them
    edit_page = client.get(page + "edit/")
    assert edit_page.status_code == 403 and html.escape(NOT_OWNER) in edit_page.content.decode()
    form = {"name": definition.name, "version": definition.version, "description": "mine now",
            "cml_lab_yaml": TOPOLOGY, "cpu_cores": "2", "memory_gb": "4", "storage_gb": "10", "node_count": "2",
            "default_duration_minutes": "60", "max_duration_minutes": "120", "idle_timeout_minutes": "20"}
    for response in (client.post(page + "edit/", form), client.post(page + "deprecate"),
                     client.post(page + "sync", {})):
        assert response.status_code == 403
        assert html.escape(NOT_OWNER) in response.content.decode()
    assert _stored(definition) == before
    assert [(e.actor, e.metadata["view"], e.metadata["status"]) for e in _refusals()] == [
        ("instructor2", "lablets:definition_edit", 403), ("instructor2", "lablets:definition_deprecate", 403),
        ("instructor2", "lablets:definition_sync", 403)]
    owner_page = _browser(instructor_user).get(page).content.decode()
    assert "/edit/" in owner_page and "Deprecate" in owner_page and "Only its owner" not in owner_page


def test_admin_actions_go_through_the_same_rule(admin_user, operator_user, instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    changelist = reverse("admin:lablets_labletdefinition_changelist")
    # An operator whom an installation let into the definitions' admin still changes none (docs/security.md).
    operator_user.user_permissions.add(Permission.objects.get(codename="view_labletdefinition"))

    refused = _browser(operator_user).post(changelist, {"action": "deprecate", "_selected_action": [definition.pk]},
                                           follow=True)

    assert html.escape(NOT_OWNER) in refused.content.decode(), refused.content.decode()[-3000:]
    assert _stored(definition)["is_active"] is True
    assert [(e.actor, e.metadata["status"]) for e in _refusals()] == [("operator1", 403)]
    _browser(admin_user).post(changelist, {"action": "deprecate", "_selected_action": [definition.pk]})
    assert _stored(definition)["is_active"] is False
