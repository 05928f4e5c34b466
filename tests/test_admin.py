"""The Django admin, as operators use it: pages load, the journal is read-only, actions go through services."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Task

from apps.audit.models import AuditEvent
from apps.lablets.services import lablet_instance_create
from apps.workers import cml as cml_gateway
from apps.workers import ec2 as ec2_gateway
from apps.workers.models import Worker
from apps.workers.services.cml import cml_credentials
from apps.workers.services import worker_transition
from apps.api.models import ApiKey
from apps.identity.services import api_key_create
from tests.awaited_support import run_queued
from tests.factories import TOPOLOGY, LabletDefinitionFactory, WorkerFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user):
    assert admin_user.is_superuser
    client = Client()
    client.force_login(admin_user)
    return client


def _objects(admin_user):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    instance = instance_in("running", worker=worker)
    api_key, _ = api_key_create(user=admin_user, actor="tests")
    return {
        "workers_worker": worker,
        "lablets_labletdefinition": instance.definition,
        "lablets_labletinstance": instance,
        "audit_auditevent": AuditEvent.objects.latest("id"),
        "api_apikey": api_key,
    }


@pytest.mark.parametrize(
    "model", ["workers_worker", "lablets_labletdefinition", "lablets_labletinstance", "audit_auditevent", "api_apikey"]
)
def test_the_changelist_and_change_page_load(admin_browser, admin_user, model):
    obj = _objects(admin_user)[model]

    change_url = reverse(f"admin:{model}_change", args=[obj.pk])
    changelist = admin_browser.get(reverse(f"admin:{model}_changelist"))
    change = admin_browser.get(change_url)

    assert changelist.status_code == 200
    assert change_url in changelist.content.decode(), "the row links to its page"
    assert change.status_code == 200


def test_the_audit_journal_cannot_be_added_changed_or_deleted_in_the_admin(admin_browser):
    event = AuditEvent.objects.latest("id")  # the creation of the admin user was journaled
    snapshot = AuditEvent.objects.filter(pk=event.pk).values().get()
    change_url = reverse("admin:audit_auditevent_change", args=[event.pk])

    assert admin_browser.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert admin_browser.get(reverse("admin:audit_auditevent_delete", args=[event.pk])).status_code == 403
    assert admin_browser.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert admin_browser.post(change_url, {"actor": "mallory", "event_type": "forged"}).status_code == 403
    bulk = admin_browser.post(
        reverse("admin:audit_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code == 200  # no such action offered: the list again ("No action selected"), nothing done
    assert AuditEvent.objects.filter(pk=event.pk).values().get() == snapshot


def test_the_terminate_action_terminates_an_instance_and_journals_it(admin_browser, admin_user, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # the teardown's background job runs here, at once
    instance = instance_in("running")

    response = admin_browser.post(
        reverse("admin:lablets_labletinstance_changelist"),
        {"action": "terminate", "_selected_action": [instance.pk]},
    )

    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.status == "terminated"
    assert instance.terminated_at is not None
    event = AuditEvent.objects.filter(resource_id=instance.public_id).latest("id")
    assert event.event_type == "lablet_instance.terminated"
    assert event.actor == admin_user.username
    assert event.metadata["from"] == "running"


def test_the_terminate_action_reports_a_refused_transition(admin_browser):
    instance = instance_in("terminated")
    events = AuditEvent.objects.count()

    response = admin_browser.post(
        reverse("admin:lablets_labletinstance_changelist"),
        {"action": "terminate", "_selected_action": [instance.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "cannot go from" in response.content.decode()
    assert AuditEvent.objects.count() == events


def test_the_stop_action_stops_a_running_worker(admin_browser, admin_user):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")

    response = admin_browser.post(
        reverse("admin:workers_worker_changelist"),
        {"action": "stop_workers", "_selected_action": [worker.pk]},
    )

    assert response.status_code == 302
    worker.refresh_from_db()
    assert worker.status == "stopped"
    actions = list(AuditEvent.objects.filter(resource_id=worker.public_id, actor=admin_user.username)
                   .values_list("event_type", flat=True))
    assert actions == ["worker.stopping", "worker.stopped"]


def test_lifecycle_fields_are_read_only_in_the_admin(admin_browser):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    definition = LabletDefinitionFactory()

    worker_page = admin_browser.get(reverse("admin:workers_worker_change", args=[worker.pk])).content.decode()
    definition_page = admin_browser.get(reverse("admin:lablets_labletdefinition_change", args=[definition.pk])).content.decode()

    assert 'name="status"' not in worker_page
    assert 'name="cml_lab_yaml"' not in definition_page


def test_api_keys_cannot_be_added_in_the_admin_and_their_hash_is_not_editable(admin_browser, admin_user):
    api_key, _ = api_key_create(user=admin_user, actor="tests")

    assert admin_browser.get(reverse("admin:api_apikey_add")).status_code == 403
    page = admin_browser.get(reverse("admin:api_apikey_change", args=[api_key.pk])).content.decode()
    assert 'name="key_hash"' not in page
    assert ApiKey.objects.get(pk=api_key.pk).key_hash == api_key.key_hash


def test_the_extend_action_moves_the_end_of_each_selected_timeslot(admin_browser):
    instances = [instance_in("running"), instance_in("scheduled")]
    ends = {i.pk: i.timeslot_end for i in instances}

    response = admin_browser.post(
        reverse("admin:lablets_labletinstance_changelist"),
        {"action": "extend_30", "_selected_action": [i.pk for i in instances]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Extended 2 instance(s) by 30 minutes." in response.content.decode()
    for instance in instances:
        instance.refresh_from_db()
        assert (instance.timeslot_end - ends[instance.pk]).total_seconds() == 30 * 60


def test_admin_pages_link_to_the_dashboard_and_back(admin_browser):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    instance = instance_in("running", worker=worker)
    instance_page = reverse("lablets:instance_detail", args=[instance.public_id])
    fleet_card = f"{reverse('dashboard:fleet')}#{worker.public_id}"

    instances_admin = admin_browser.get(reverse("admin:lablets_labletinstance_changelist")).content.decode()
    workers_admin = admin_browser.get(reverse("admin:workers_worker_changelist")).content.decode()
    view_on_site = admin_browser.get(reverse("admin:lablets_labletinstance_change", args=[instance.pk])).content.decode()
    dashboard_instance = admin_browser.get(instance_page).content.decode()
    dashboard_fleet = admin_browser.get(reverse("dashboard:fleet")).content.decode()

    assert f'href="{instance_page}"' in instances_admin
    assert f'href="{fleet_card}"' in workers_admin
    assert "View on site" in view_on_site
    assert f'href="{reverse("admin:lablets_labletinstance_change", args=[instance.pk])}"' in dashboard_instance
    assert f'href="{reverse("admin:workers_worker_change", args=[worker.pk])}"' in dashboard_fleet
    assert f'id="{worker.public_id}"' in dashboard_fleet  # the anchor the admin links to

    definition = instance.definition
    definitions_admin = admin_browser.get(reverse("admin:lablets_labletdefinition_changelist")).content.decode()
    dashboard_definition = admin_browser.get(reverse("lablets:definition_detail", args=[definition.public_id]))
    assert f'href="{reverse("lablets:definition_detail", args=[definition.public_id])}"' in definitions_admin
    assert (f'href="{reverse("admin:lablets_labletdefinition_change", args=[definition.pk])}"'
            in dashboard_definition.content.decode())


def test_the_dashboard_hides_admin_links_from_instructors(instructor_user):
    instance = lablet_instance_create(actor="tests", user=instructor_user, definition_id=LabletDefinitionFactory().public_id,
                                      owner_id="s-1", timeslot_start=timezone.now() + timedelta(hours=1))
    client = Client()
    client.force_login(instructor_user)

    page = client.get(reverse("lablets:instance_detail", args=[instance.public_id])).content.decode()

    assert "/admin/" not in page


def _queued() -> list[tuple[str, tuple]]:
    return [(package.task["func"], tuple(package.task["args"])) for package in OrmQ.objects.order_by("id")]


def test_the_sync_action_queues_a_sync_per_definition_and_asks_cml_in_the_tasks(admin_browser, admin_user, ec2, cml,
                                                                                no_cluster):
    worker = placeable_worker(name="cml-admin-sync")
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=TOPOLOGY, title="reference")
    synced = LabletDefinitionFactory(cml_lab_yaml="lab:\n  title: stale\nnodes: []\n", reference_lab_id=lab_id,
                                     reference_worker=worker)
    without_lab = LabletDefinitionFactory()
    actor = admin_user.get_username()

    response = admin_browser.post(
        reverse("admin:lablets_labletdefinition_changelist"),
        {"action": "sync_from_cml", "_selected_action": [synced.pk, without_lab.pk]}, follow=True)

    assert "Sync of 2 definition(s) queued; results appear in the audit journal" in response.content.decode()
    assert sorted(_queued()) == sorted([("apps.lablets.tasks.sync_definition", (synced.pk, actor, "", "", True)),
                                        ("apps.lablets.tasks.sync_definition", (without_lab.pk, actor, "", "", True))])
    synced.refresh_from_db()
    assert "stale" in synced.cml_lab_yaml and synced.synced_at is None  # CML not asked in the request

    assert run_queued() == 2  # the q cluster
    synced.refresh_from_db()
    assert "nodes:" in synced.cml_lab_yaml and "stale" not in synced.cml_lab_yaml and synced.synced_at is not None
    event = AuditEvent.objects.get(event_type="lablet_definition.synced", resource_id=synced.public_id)
    assert event.actor == actor
    refusal = Task.objects.get(name=f"sync_definition-{without_lab.public_id}").result
    assert refusal["error"] == "ValidationFailed" and "has no reference lab" in refusal["detail"]


def test_the_sync_action_with_a_cluster_in_sync_mode_syncs_at_once(admin_browser, ec2, cml, tasks_inline):
    worker = placeable_worker(name="cml-admin-sync-2")
    lab_id = cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=TOPOLOGY, title="reference")
    definition = LabletDefinitionFactory(cml_lab_yaml="lab:\n  title: stale\nnodes: []\n", reference_lab_id=lab_id,
                                         reference_worker=worker)

    response = admin_browser.post(reverse("admin:lablets_labletdefinition_changelist"),
                                  {"action": "sync_from_cml", "_selected_action": [definition.pk]}, follow=True)

    assert "Sync of 1 definition(s) queued" in response.content.decode()
    definition.refresh_from_db()
    assert "stale" not in definition.cml_lab_yaml and definition.synced_at is not None


def test_the_sync_now_action_queues_the_ec2_sync_and_a_cml_check_per_running_worker(admin_browser, admin_user, ec2,
                                                                                    cml, no_cluster):
    checked = placeable_worker(name="sync-now-1")
    stopped_outside = placeable_worker(name="sync-now-2")
    ec2_gateway._call(stopped_outside.aws_region, "stop_instances", InstanceIds=[stopped_outside.aws_instance_id])
    pending = WorkerFactory(name="sync-now-3")  # not running: no CML check
    actor = admin_user.get_username()

    response = admin_browser.post(
        reverse("admin:workers_worker_changelist"),
        {"action": "sync_now", "_selected_action": [checked.pk, stopped_outside.pk, pending.pk]}, follow=True)

    assert "EC2 sync and CML check of 2 running worker(s) queued" in response.content.decode()
    queued = _queued()
    assert queued[0] == ("apps.workers.tasks.ec2_sync", (actor,))
    assert sorted(queued[1:]) == sorted([("apps.workers.tasks.cml_health_one", (checked.pk, actor)),
                                         ("apps.workers.tasks.cml_health_one", (stopped_outside.pk, actor))])
    assert Worker.objects.get(pk=stopped_outside.pk).status == "running"  # EC2 not asked in the request
    assert Worker.objects.get(pk=checked.pk).last_cml_sync_at is None  # nor CML

    assert run_queued() == 3  # the q cluster
    assert Worker.objects.get(pk=checked.pk).last_cml_sync_at is not None
    assert Worker.objects.get(pk=checked.pk).last_ec2_sync_at is not None
    assert Worker.objects.get(pk=stopped_outside.pk).status == "stopped"
    assert AuditEvent.objects.get(event_type="worker.stopped", resource_id=stopped_outside.public_id).actor == actor
    assert Worker.objects.get(pk=pending.pk).last_cml_sync_at is None
