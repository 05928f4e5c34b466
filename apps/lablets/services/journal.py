"""The journal rows about a lablet instance: their common metadata is built here, once."""

from apps.audit.services import audit_record
from apps.lablets.models import LabletInstance


def instance_audit_entry(instance: LabletInstance, *, event_type: str, actor: str, action: str, success: bool = True,
                         error: str = "", metadata: dict | None = None) -> dict:
    """audit_record's keyword arguments for an event about `instance` (audit_record_many takes a list of
    them): its definition, owner, worker and CML lab id (null when it has none yet) before the event's own
    `metadata`. Every `io.lablet.instance.*` CloudEvent carries the worker and lab at the top of its `data`
    from here (apps.webhooks.events.cloudevent_data). `instance` has its definition and worker loaded."""
    common = {
        "definition_id": instance.definition.public_id,
        "owner_id": instance.owner_id,
        "worker_id": instance.worker.public_id if instance.worker_id else None,
        "cml_lab_id": instance.cml_lab_id or None,
    }
    return {"event_type": event_type, "actor": actor, "resource_type": "lablet_instance",
            "resource_id": instance.public_id, "action": action, "success": success, "error": error,
            "metadata": {**common, **(metadata or {})}}


def instance_audit(instance: LabletInstance, **event) -> None:
    """One journal row about `instance` (instance_audit_entry's arguments), in the caller's transaction."""
    audit_record(**instance_audit_entry(instance, **event))
