"""RUNNING → COLLECTING: the node configurations, extracted through CML, become the instance's artifacts.

The extraction happens while the instance is still RUNNING and with no transaction open; the
transition, the artifacts and `lablet_instance.collected` are then committed together. If CML fails the
instance stays RUNNING (502 to the caller, `lablet_instance.collection_failed` in the journal), so the
request can simply be repeated.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletInstance
from apps.lablets.services.instances import lablet_instance_transition
from apps.lablets.services.steps import lablet_instance_record_collection, lablet_instance_record_collection_failed
from apps.workers import cml
from apps.core.errors import InvalidTransition, UpstreamUnavailable

from .common import StepFailed, credentials, load


def collect(*, instance: LabletInstance, actor: str, now: datetime | None = None) -> LabletInstance:
    now = now or timezone.now()
    instance = load(instance.pk)
    if instance.status != S.RUNNING:
        raise InvalidTransition("Lablet instance", instance.public_id, instance.status, S.COLLECTING)
    artifacts = []
    if instance.cml_lab_id and instance.worker is not None:
        try:
            configs = cml.cml_lab_node_configs(**credentials(instance), lab_id=instance.cml_lab_id, extract=True)
        except (cml.CmlError, StepFailed) as exc:
            lablet_instance_record_collection_failed(instance=instance, actor=actor, error=str(exc))
            raise UpstreamUnavailable(
                f"Collecting the node configurations of lablet instance {instance.public_id} failed: {exc}. "
                "The instance is still running; try again.") from exc
        stamp = now.isoformat()
        artifacts = [{"kind": "node_config", "node": label, "content": text, "collected_at": stamp}
                     for label, text in configs.items()]
    with transaction.atomic():
        lablet_instance_transition(instance=instance, to=S.COLLECTING, actor=actor, reason="collection requested")
        lablet_instance_record_collection(instance=instance, actor=actor, artifacts=artifacts, at=now)
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=instance.pk)
