"""POST /api/lablet-definitions/{id}/sync: the topology pulled back from a CML lab (over HTTP to the
CML simulator, through the real client). Who may sync from which lab: tests/lablets/test_definition_owners.py."""

import pytest
import yaml

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletDefinition
from apps.workers import cml as cml_gateway
from apps.workers.services.cml import cml_credentials
from tests.factories import LabletDefinitionFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db
TOPOLOGY = open("examples/topologies/two-routers.yaml").read()


def _lab_on(worker, text=TOPOLOGY):
    return cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=text, title="reference")


def _instance_lab(worker, user, lab_id=None):
    """A lab on `worker`'s CML held by a running instance `user` created (a lab `user` may sync from)."""
    lab_id = lab_id or _lab_on(worker)
    instance_in("running", worker=worker, cml_lab_id=lab_id, created_by=user)
    return lab_id


def test_it_pulls_the_topology_from_a_lab_and_keeps_it_as_the_reference(instructor_client, instructor_user, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    old_hash = definition.content_hash
    lab_id = _instance_lab(worker, instructor_user)

    response = instructor_client.post(f"/api/lablet-definitions/{definition.public_id}/sync",
                                      {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    stored = LabletDefinition.objects.get(pk=definition.pk)
    assert yaml.safe_load(stored.cml_lab_yaml)["nodes"]  # CML's export of the lab, with its nodes
    assert body["content_hash"] == stored.content_hash == LabletDefinition.hash_yaml(stored.cml_lab_yaml) != old_hash
    assert (body["reference_lab_id"], body["reference_worker_id"]) == (lab_id, worker.public_id)
    event = AuditEvent.objects.get(event_type="lablet_definition.synced", resource_id=definition.public_id)
    assert event.metadata["before"]["content_hash"] == old_hash and event.metadata["changed"] is True

    # Again without a body: from the reference lab; nothing changed on CML, so the hash stays.
    again = instructor_client.post(f"/api/lablet-definitions/{definition.public_id}/sync", {}, format="json")
    assert again.status_code == 200
    assert again.json()["content_hash"] == stored.content_hash


def test_without_a_reference_lab_it_asks_for_one(instructor_client, instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)

    response = instructor_client.post(f"/api/lablet-definitions/{definition.public_id}/sync", {}, format="json")

    assert response.status_code == 422
    assert "lab_id" in response.json()["errors"]


def test_an_unknown_lab_or_worker_is_422(instructor_client, instructor_user, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    url = f"/api/lablet-definitions/{definition.public_id}/sync"
    _instance_lab(worker, instructor_user, lab_id="no-such-lab")  # an instance's lab that CML no longer has

    unknown_lab = instructor_client.post(url, {"lab_id": "no-such-lab", "worker_id": worker.public_id}, format="json")
    unknown_worker = instructor_client.post(url, {"lab_id": "x", "worker_id": "worker-0000000000000000"}, format="json")

    assert unknown_lab.status_code == 422 and "lab_id" in unknown_lab.json()["errors"]
    assert unknown_worker.status_code == 422 and "worker_id" in unknown_worker.json()["errors"]
    assert LabletDefinition.objects.get(pk=definition.pk).content_hash == definition.content_hash


def test_cml_down_is_502_and_changes_nothing(instructor_client, instructor_user, ec2, cml):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    lab_id = _instance_lab(worker, instructor_user)
    cml.set_faults(down=True)

    response = instructor_client.post(f"/api/lablet-definitions/{definition.public_id}/sync",
                                      {"lab_id": lab_id, "worker_id": worker.public_id}, format="json")

    assert response.status_code == 502
    assert response["Content-Type"].startswith("application/problem+json")
    assert LabletDefinition.objects.get(pk=definition.pk).content_hash == definition.content_hash
