"""Deleting in the Django admin (docs/security.md#the-django-admin-admin): a lablet definition is deleted only
through `lablet_definition_delete` (the owner rule, the in-use check, the journal), from the delete button and
from "Delete selected" alike; the models whose rows no service deletes (workers, templates, instances, API keys,
provider links) offer no deletion at all. Through Django's test client, as tests/test_admin.py."""

import html

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.identity.models import ProviderIdentity
from apps.identity.services import api_key_create
from apps.lablets.admin import LabletDefinitionAdmin
from apps.lablets.models import LabletDefinition
from apps.lablets.services.definitions import NOT_OWNER
from apps.workers.models import WorkerTemplate
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:lablets_labletdefinition_changelist"


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _journal(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def _delete_button(client, obj):
    return client.post(reverse("admin:lablets_labletdefinition_delete", args=[obj.pk]), {"post": "yes"}, follow=True)


def _delete_selected(client, *objs):
    return client.post(reverse(CHANGELIST), {"action": "delete_selected", "post": "yes",
                                             "_selected_action": [obj.pk for obj in objs]}, follow=True)


@pytest.fixture
def deleting_operator(operator_user):
    """An operator whom an installation gave the Django permissions to view and delete definitions: the
    definitions' owner rule still applies (operators change none, docs/security.md)."""
    operator_user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_labletdefinition", "delete_labletdefinition"]))
    return operator_user


@pytest.mark.parametrize("how", [_delete_button, _delete_selected])
def test_an_admin_deleting_a_definition_goes_through_the_service_and_is_journalled(admin_user, instructor_user, how):
    definition = LabletDefinitionFactory(created_by=instructor_user)

    response = how(_browser(admin_user), definition)

    assert response.status_code == 200
    assert not LabletDefinition.objects.filter(pk=definition.pk).exists()
    [deleted] = _journal("lablet_definition.deleted")
    assert (deleted.actor, deleted.resource_id) == ("admin1", definition.public_id)
    assert deleted.metadata["before"]["name"] == definition.name


@pytest.mark.parametrize("how", [_delete_button, _delete_selected])
def test_an_operator_with_the_delete_permission_cannot_delete_a_definition_and_the_refusal_is_journalled(
        deleting_operator, instructor_user, how):
    definition = LabletDefinitionFactory(created_by=instructor_user)

    page = how(_browser(deleting_operator), definition).content.decode()

    assert LabletDefinition.objects.filter(pk=definition.pk).exists()
    assert html.escape(NOT_OWNER) in page
    assert "deleted successfully" not in page and "Successfully deleted" not in page
    assert _journal("lablet_definition.deleted") == []
    assert [(e.actor, e.metadata["status"]) for e in _journal("api_call.refused")] == [("operator1", 403)]


def test_delete_selected_deletes_what_the_service_allows_and_says_what_it_refused(
        admin_user, instructor_user, other_instructor, monkeypatch):
    # An instructor cannot reach the admin; an admin can delete every definition: the refusal here is the
    # service's in-use check, met when an instance is created after the confirmation page was computed.
    free, raced = (LabletDefinitionFactory(created_by=instructor_user),
                   LabletDefinitionFactory(created_by=other_instructor))
    original = LabletDefinitionAdmin.get_deleted_objects

    def then_an_instance_appears(self, objs, request):
        result = original(self, objs, request)
        if request.POST.get("post"):
            instance_in("pending", definition=raced)
        return result

    monkeypatch.setattr(LabletDefinitionAdmin, "get_deleted_objects", then_an_instance_appears)

    page = _delete_selected(_browser(admin_user), free, raced).content.decode()

    assert not LabletDefinition.objects.filter(pk=free.pk).exists()
    assert LabletDefinition.objects.filter(pk=raced.pk).exists()
    assert "is used by 1 instance(s)" in html.unescape(page)
    assert "Deleted 1 lablet definitions." in page and "Successfully deleted 2" not in page
    assert [e.resource_id for e in _journal("lablet_definition.deleted")] == [free.public_id]


def test_the_delete_button_shows_the_services_conflict_and_deletes_nothing(admin_user, instructor_user, monkeypatch):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    original = LabletDefinitionAdmin.get_deleted_objects

    def then_an_instance_appears(self, objs, request):
        result = original(self, objs, request)
        if request.method == "POST":
            instance_in("pending", definition=definition)
        return result

    monkeypatch.setattr(LabletDefinitionAdmin, "get_deleted_objects", then_an_instance_appears)

    response = _delete_button(_browser(admin_user), definition)

    assert response.redirect_chain[-1][0] == reverse("admin:lablets_labletdefinition_change", args=[definition.pk])
    assert "is used by 1 instance(s)" in html.unescape(response.content.decode())
    assert LabletDefinition.objects.filter(pk=definition.pk).exists()
    assert _journal("lablet_definition.deleted") == []


def _undeletables(admin_user) -> dict:
    worker = WorkerFactory()
    return {
        "workers_worker": worker,
        "workers_workertemplate": WorkerTemplate.objects.create(name="small", instance_type="m5.large", cpu_cores=4,
                                                                 memory_gb=16, storage_gb=64, max_nodes=10),
        "lablets_labletinstance": instance_in("pending"),
        "api_apikey": api_key_create(user=admin_user, actor="tests")[0],
        "identity_provideridentity": ProviderIdentity.objects.create(user=admin_user, issuer="https://idp.test",
                                                                     subject="sub-1"),
    }


@pytest.mark.parametrize("model", ["workers_worker", "workers_workertemplate", "lablets_labletinstance",
                                   "api_apikey", "identity_provideridentity"])
def test_models_no_service_deletes_offer_no_deletion_in_the_admin(admin_user, model):
    obj = _undeletables(admin_user)[model]
    client = _browser(admin_user)
    model_class = type(obj)

    assert client.get(reverse(f"admin:{model}_delete", args=[obj.pk])).status_code == 403
    assert client.post(reverse(f"admin:{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    changelist = client.get(reverse(f"admin:{model}_changelist")).content.decode()
    assert 'value="delete_selected"' not in changelist
    client.post(reverse(f"admin:{model}_changelist"),
                {"action": "delete_selected", "post": "yes", "_selected_action": [obj.pk]})
    assert model_class.objects.filter(pk=obj.pk).exists()
