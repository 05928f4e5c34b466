"""The fleet's reconciliation with EC2 and CML (apps.fleet.reconcile): instances that lost their lab behind
LabManager's back, and labs on CML that nothing owns.

Over HTTP to moto's EC2 (the worker terminated with boto3, found by the EC2 sync) and to the CML simulator
(labs deleted or imported with the CML gateway, as someone on the controller would). Time is passed as
`now=`, never slept."""

from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from django.conf import settings
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.dashboard.selectors import overview
from apps.fleet import reconcile as fleet
from apps.fleet.models import OrphanLab
from apps.fleet.reconcile import fleet_reconcile
from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import ConsolePort, LabletInstance, WarmLab, WarmLabStatus
from apps.lablets.services.lease import lease_take
from apps.sessions.models import SessionLab
from apps.webhooks.events import cloudevent_type
from apps.workers import cml as gateway
from apps.workers.models import Worker
from apps.workers.services import worker_ec2_sync, worker_transition
from apps.workers.services.cml import cml_credentials
from tests.lablets.engine_support import TWO_ROUTERS, events, fresh, labs, running_worker, scheduled, two_router_definition

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(cml):
    return running_worker()


@pytest.fixture
def definition():
    return two_router_definition(idle_timeout_minutes=240)


def running(worker, definition, **kwargs) -> LabletInstance:
    instance = scheduled(worker, definition, **kwargs)
    lifecycle_tick()
    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    return instance


def after_start(instance) -> timezone.datetime:
    """A moment after the instance's slot began."""
    return instance.timeslot_start + timedelta(minutes=1)


def lost_event(instance) -> AuditEvent:
    return AuditEvent.objects.get(resource_id=instance.public_id, event_type="lablet_instance.lost")


def delete_on_cml(worker, lab_id) -> None:
    """Someone deletes the lab on the controller, not through LabManager."""
    gateway.cml_lab_delete(**cml_credentials(worker), lab_id=lab_id, force=True, poll_interval=0.05)


def page_text(user) -> str:
    """The overview page as `user` sees it."""
    client = Client()
    client.force_login(user)
    response = client.get("/dashboard/")
    assert response.status_code == 200
    return response.content.decode()


def import_on_cml(worker, title) -> str:
    return gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=TWO_ROUTERS, title=title)


# --- lost instances ---------------------------------------------------------------------------------


def test_a_running_instance_whose_worker_was_terminated_in_ec2_ends_as_lost(ec2, cml, definition, admin_user):
    worker = running_worker()
    instance = running(worker, definition)
    ec2_client = boto3.client("ec2", region_name="us-west-2", endpoint_url=settings.AWS_ENDPOINT_URL,
                              config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    ec2_client.terminate_instances(InstanceIds=[worker.aws_instance_id])  # behind LabManager's back
    worker_ec2_sync()
    assert Worker.objects.get(pk=worker.pk).status == "terminated"
    assert fresh(instance).status == "running"  # what the EC2 sync alone leaves: the reconciliation's work

    report = fleet_reconcile(now=after_start(instance))

    instance = fresh(instance)
    assert report["lost_ended"] == 1
    assert instance.status == "terminated"
    assert instance.termination_reason == f"lost: worker {worker.public_id} terminated"
    assert instance.cml_lab_removed_at is not None  # the lab went with the worker: nothing left to clean up
    assert not ConsolePort.objects.filter(instance=instance).exists()
    event = lost_event(instance)
    assert event.metadata["outcome"] == "ended" and event.metadata["from"] == "running"
    assert event.metadata["worker_id"] == worker.public_id
    assert cloudevent_type(event.event_type) == "io.lablet.instance.lost"
    assert events(instance)[-2:] == ["lablet_instance.lost", "lablet_instance.terminated"]
    assert [e.resource_id for e in overview(user=admin_user)["lost_instances"]] == [instance.public_id]
    page = page_text(admin_user)
    assert f"{instance.public_id}</a> lost its lab (worker {worker.public_id} terminated): ended" in page

    assert "lost_ended" not in fleet_reconcile(now=after_start(instance))  # once only
    assert AuditEvent.objects.filter(event_type="lablet_instance.lost").count() == 1


def test_an_instance_whose_slot_has_not_begun_is_placed_again_when_its_worker_is_gone(cml, definition):
    first, second = running_worker(name="first"), running_worker(name="second")
    instance = running(first, definition, starts_in=timedelta(minutes=5))
    waiting = scheduled(first, definition, starts_in=timedelta(hours=3))  # not brought up yet
    worker_transition(worker=first, to="terminated", actor="tests")

    report = fleet_reconcile()

    instance = fresh(instance)
    assert report["lost_re_placed"] == 1
    assert instance.status == "scheduled" and instance.worker == second  # placed again at once
    assert instance.cml_lab_id == "" and instance.console == [] and instance.termination_reason == ""
    assert lost_event(instance).metadata["outcome"] == "re_placed"
    assert "placing it again" in AuditEvent.objects.filter(
        resource_id=instance.public_id, event_type="lablet_instance.pending").get().metadata["reason"]
    assert fresh(waiting).status == "scheduled" and fresh(waiting).worker == first  # not the reconciler's
    lifecycle_tick()  # the scheduler's pass takes back what the terminated worker held; the lab comes up again
    assert fresh(waiting).worker == second
    instance = fresh(instance)
    assert instance.status == "running" and instance.cml_lab_id in labs(cml)


def test_a_lab_deleted_on_cml_ends_its_instance_as_lost(worker, definition, cml):
    instance = running(worker, definition)
    delete_on_cml(worker, instance.cml_lab_id)

    report = fleet_reconcile(now=after_start(instance))

    instance = fresh(instance)
    assert report["lost_ended"] == 1
    assert instance.status == "terminated"  # through the teardown, which finds the lab gone
    assert instance.termination_reason == f"lost: CML lab {lost_event(instance).metadata['lost_cml_lab_id']} deleted"
    assert instance.archive_key
    assert "lablet_instance.lost" in events(instance)


def test_a_cml_that_errors_makes_no_lab_lost_and_no_lab_an_orphan(worker, definition, cml):
    instance = running(worker, definition)
    import_on_cml(worker, "stray")
    cml.set_faults(down=True)

    report = fleet_reconcile(now=after_start(instance))

    assert report == {"cml_errors": 1}
    assert fresh(instance).status == "running"
    assert not OrphanLab.objects.exists()
    assert not AuditEvent.objects.filter(event_type="lablet_instance.lost").exists()


def test_an_instance_mid_step_or_still_instantiating_is_not_judged_lost(worker, definition, cml):
    instance = running(worker, definition)
    delete_on_cml(worker, instance.cml_lab_id)
    lease_take(instance.pk, now=timezone.now(), step="collecting")  # an engine step holds it
    instantiating = scheduled(worker, definition, starts_in=timedelta(minutes=5), owner_id="other")
    from apps.lablets.services import lablet_instance_transition
    lablet_instance_transition(instance=instantiating, to="instantiating", actor="tests")  # no lab yet

    report = fleet_reconcile(now=after_start(instance))

    assert "lost_ended" not in report and "lost_re_placed" not in report
    assert fresh(instance).status == "running" and fresh(instantiating).status == "instantiating"


# --- orphan labs ------------------------------------------------------------------------------------


def test_an_orphan_lab_is_listed_then_removed_after_the_grace(worker, definition, cml, admin_user, instructor_user,
                                                              settings):
    settings.FLEET_ORPHAN_LAB_GRACE_MINUTES = 60
    instance = running(worker, definition)
    stray = import_on_cml(worker, "someone's experiment")
    reference = import_on_cml(worker, "reference")
    definition.reference_lab_id = reference
    definition.save(update_fields=["reference_lab_id"])
    session_lab = import_on_cml(worker, "session")
    SessionLab.objects.create(worker=worker, status="running", cml_lab_id=session_lab)
    t0 = timezone.now()

    assert fleet_reconcile(now=t0)["orphan_labs_found"] == 1
    orphan = OrphanLab.objects.get()
    assert (orphan.cml_lab_id, orphan.title, orphan.worker, orphan.first_seen_at) == (
        stray, "someone's experiment", worker, t0)
    assert overview(user=admin_user)["orphan_labs"] == [orphan]
    assert overview(user=instructor_user)["orphan_labs"] == []  # operators' business
    assert f"Orphan lab {stray} (someone&#x27;s experiment) on worker {worker.name}" in page_text(admin_user)
    found = AuditEvent.objects.get(event_type="fleet.orphan_lab_found")
    assert found.metadata["cml_lab_id"] == stray and cloudevent_type(found.event_type) == "io.lablet.fleet.orphan_lab_found"

    fleet_reconcile(now=t0 + timedelta(minutes=59))
    assert stray in labs(cml) and OrphanLab.objects.get().removed_at is None

    report = fleet_reconcile(now=t0 + timedelta(minutes=61))

    assert report["orphan_labs_removed"] == 1
    assert set(labs(cml)) == {instance.cml_lab_id, reference, session_lab}
    assert OrphanLab.objects.get().removed_at == t0 + timedelta(minutes=61)
    assert AuditEvent.objects.filter(event_type="fleet.orphan_lab_removed", success=True).count() == 1
    assert overview(user=admin_user)["orphan_labs"] == []
    assert fresh(instance).status == "running"


def test_with_no_grace_orphans_are_listed_only_and_dropped_once_known(worker, definition, cml, settings):
    settings.FLEET_ORPHAN_LAB_GRACE_MINUTES = 0
    stray = import_on_cml(worker, "adopt me")
    t0 = timezone.now()
    fleet_reconcile(now=t0)
    fleet_reconcile(now=t0 + timedelta(days=2))
    assert stray in labs(cml) and OrphanLab.objects.get().removed_at is None

    definition.reference_lab_id = stray  # adopted: a definition's reference lab now
    definition.save(update_fields=["reference_lab_id"])
    report = fleet_reconcile(now=t0 + timedelta(days=2))

    assert report["orphan_labs_cleared"] == 1 and not OrphanLab.objects.exists()
    assert AuditEvent.objects.get(event_type="fleet.orphan_lab_cleared").metadata["reason"] == "known again"


def test_a_lab_being_imported_for_an_instance_is_not_an_orphan(worker, definition, cml):
    instance = scheduled(worker, definition)
    import_on_cml(worker, instance.public_id)  # imported, its id not recorded yet

    fleet_reconcile()

    assert not OrphanLab.objects.exists()


def test_the_labs_of_warm_pools_are_not_orphans(worker, definition, cml):
    """A warm lab's lab, recorded or still being imported (titled with the warm lab's id), belongs to its pool;
    once the warm lab is recycled its lab is nobody's."""
    now = timezone.now()
    common = {"definition": definition, "worker": worker, "content_hash": definition.content_hash,
              "fingerprint": "-", "created_at": now}
    recorded = WarmLab.objects.create(status=WarmLabStatus.READY, **common)
    recorded.cml_lab_id = import_on_cml(worker, recorded.public_id)
    recorded.save(update_fields=["cml_lab_id"])
    importing = WarmLab.objects.create(status=WarmLabStatus.STARTING, **common)
    import_on_cml(worker, importing.public_id)  # imported, its id not recorded yet

    fleet_reconcile()
    assert not OrphanLab.objects.exists()

    WarmLab.objects.filter(pk=recorded.pk).update(status=WarmLabStatus.RECYCLED)
    fleet_reconcile()
    assert list(OrphanLab.objects.values_list("cml_lab_id", flat=True)) == [recorded.cml_lab_id]
