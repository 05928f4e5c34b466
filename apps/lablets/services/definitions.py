"""Lablet definitions: create, update, delete, sync; who may change one (its owner or an admin) and which lab a
sync may copy (the reference lab, or the lab of an instance the caller sees)."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.lablets.lifecycle import LIVE
from apps.lablets.models import LabletDefinition, WarmLab, WarmLabStatus
from apps.lablets.patty import port_definition_errors
from apps.workers.cml.topology_policy import topology_check, topology_parse
from apps.lablets.selectors import lablet_instance_visible_to
from apps.api.permissions import may_change_definition
from apps.core.errors import Conflict, Forbidden, UpstreamUnavailable, ValidationFailed

REQUIREMENT_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "node_count")
LIFECYCLE_FIELDS = ("default_duration_minutes", "max_duration_minutes", "idle_timeout_minutes",
                    "keep_lab_until_slot_end")
SNAPSHOT_FIELDS = (("name", "version", "description", "content_hash", "is_active", "trusted",
                    "direct_console_access", "warm_pool_depth") + REQUIREMENT_FIELDS
                   + LIFECYCLE_FIELDS)
NOT_OWNER = "Only the definition's owner or an admin may change it."
FOREIGN_LAB = ("A definition is synced only from its reference lab or from the CML lab of a lablet instance you "
               "can see.")


def _snapshot(definition: LabletDefinition) -> dict:
    return {field: getattr(definition, field) for field in SNAPSHOT_FIELDS}


def validate_cml_yaml(text: str) -> None:
    """The topology must parse as YAML and be a mapping (a CML lab export); 422 otherwise. The policy
    (node definitions, external connectors, caps) is `validate_topology`'s, which needs the trust."""
    topology_parse(text, field="cml_lab_yaml")


def validate_topology(text: str, *, trusted: bool) -> None:
    """The topology policy (apps.workers.cml.topology_policy): 422 naming every node that breaks it."""
    topology_check(text, trusted=trusted, field="cml_lab_yaml")


def validate_port_definitions(text: str, port_definitions: list[dict]) -> None:
    """Every port definition names a node of the topology (its `device_name` is a node label), the device CML
    PATty tags at instantiation: 422 naming each one that does not."""
    problems = port_definition_errors(text, port_definitions)
    if problems:
        raise ValidationFailed("A port definition names a device that is not in the topology: " + " ".join(problems),
                               errors={"port_definitions": problems})


def _trust_after(*, current: bool, data: dict, topology_changes: bool, may_trust: bool) -> bool:
    """The definition's `trusted` once this change is made. Only an admin (`may_trust`) changes it (403
    otherwise); trust vouches for the topology an admin saw, so anyone else's change of the topology clears it."""
    wanted = data.get("trusted")
    if wanted is not None and wanted != current:
        if not may_trust:
            raise Forbidden("Only an admin may mark a lablet definition trusted, or take the mark away.",
                            errors={"trusted": ["Only an admin may change this."]})
        return wanted
    if topology_changes and current and not may_trust:
        return False
    return current


def _trust_unchanged_since_read(locked: LabletDefinition, read: LabletDefinition) -> None:
    """The topology was checked with the trust read before the lock: an admin's change of it since is a 409
    (never a trust written back over a revocation)."""
    if locked.trusted != read.trusted:
        raise Conflict(f"Lablet definition {locked.public_id} was marked {'' if locked.trusted else 'un'}trusted "
                       "meanwhile; read it again and retry.")


def _validate_lifecycle(fields: dict) -> None:
    if fields["max_duration_minutes"] < fields["default_duration_minutes"]:
        raise ValidationFailed(
            "lifecycle.max_duration_minutes must be at least lifecycle.default_duration_minutes.",
            errors={"lifecycle.max_duration_minutes": ["Must be >= default_duration_minutes."]},
        )


def _flatten(data: dict) -> dict:
    """API shape (nested resource_requirements/lifecycle) → model fields."""
    fields = {key: data[key] for key in ("name", "version", "description", "cml_lab_yaml", "port_definitions", "is_active",
                                                 "direct_console_access", "warm_pool_depth") if key in data}
    fields.update({key: data["resource_requirements"][key] for key in REQUIREMENT_FIELDS if key in data.get("resource_requirements", {})})
    fields.update({key: data["lifecycle"][key] for key in LIFECYCLE_FIELDS if key in data.get("lifecycle", {})})
    return fields


def lablet_definition_check_change(*, definition: LabletDefinition, user) -> None:
    """403 unless `user` may change `definition`: its owner or an admin (apps.api.permissions
    .may_change_definition). Every change of a definition passes here: API, dashboard, admin. `user=None` is a
    management command (import_definitions), run by whoever runs the server."""
    if user is not None and not may_change_definition(user, definition):
        raise Forbidden(NOT_OWNER)


def _sync_worker(definition: LabletDefinition, worker_id: str):
    """The worker a sync asks: `worker_id` (422 if unknown) or the definition's reference worker (may be None)."""
    from apps.workers.models import Worker

    if not worker_id:
        return definition.reference_worker
    worker = Worker.objects.filter(public_id=worker_id).exclude(status="terminated").first()
    if worker is None:
        raise ValidationFailed(f"Worker {worker_id} does not exist.", errors={"worker_id": ["Unknown worker."]})
    return worker


def lablet_definition_check_sync(*, definition: LabletDefinition, user, lab_id: str = "", worker_id: str = "") -> None:
    """Before a sync is enqueued: the caller may change the definition (403), and the lab is the definition's
    reference lab on its reference worker, or the CML lab of a lablet instance the caller sees (instructors:
    the ones they created; admins and operators: all) whose lab was not removed — else 403, before CML is
    asked (whether some other lab exists is not revealed). An unknown worker is 422; a sync with no lab to
    copy is left to the sync's own 422."""
    lablet_definition_check_change(definition=definition, user=user)
    if user is None:
        return
    worker = _sync_worker(definition, worker_id)
    lab_id = lab_id or definition.reference_lab_id
    if not lab_id or worker is None:
        return
    if lab_id == definition.reference_lab_id and worker.pk == definition.reference_worker_id:
        return
    seen = lablet_instance_visible_to(user=user).filter(cml_lab_id=lab_id, worker=worker,
                                                        cml_lab_removed_at__isnull=True)
    if not seen.exists():
        raise Forbidden(FOREIGN_LAB, errors={"lab_id": ["Not this definition's reference lab nor a lab of an "
                                                        "instance you can see."]})


def _unique_violation(fields: dict) -> Conflict:
    return Conflict(f"A lablet definition named '{fields['name']}' with version '{fields['version']}' already exists.")


def lablet_definition_create(*, actor: str, user=None, data: dict, may_trust: bool = False) -> LabletDefinition:
    """`may_trust`: the caller is an admin, who alone may create it `trusted` (403 for anyone else)."""
    fields = _flatten(data)
    fields.setdefault("default_duration_minutes", 120)
    fields.setdefault("max_duration_minutes", max(240, fields["default_duration_minutes"]))
    fields["trusted"] = _trust_after(current=False, data=data, topology_changes=True, may_trust=may_trust)
    validate_topology(fields["cml_lab_yaml"], trusted=fields["trusted"])
    validate_port_definitions(fields["cml_lab_yaml"], fields.get("port_definitions") or [])
    _validate_lifecycle(fields)
    fields["content_hash"] = LabletDefinition.hash_yaml(fields["cml_lab_yaml"])
    try:
        with transaction.atomic():
            definition = LabletDefinition.objects.create(created_by=user, owner=user, **fields)
            audit_record(
                event_type="lablet_definition.created",
                actor=actor,
                resource_type="lablet_definition",
                resource_id=definition.public_id,
                action="lablet_definition.create",
                metadata={"after": _snapshot(definition), "owner": user.get_username() if user else None},
            )
    except IntegrityError:
        raise _unique_violation(fields)
    return definition


def lablet_definition_update(*, definition: LabletDefinition, user, actor: str, data: dict,
                             may_trust: bool = False) -> LabletDefinition:
    """Only by the owner or an admin (403). `may_trust`: the caller is an admin, who alone may change `trusted`
    (403 for anyone else); a new topology from anyone else is checked as untrusted and clears the mark."""
    lablet_definition_check_change(definition=definition, user=user)
    fields = _flatten(data)
    merged = {**{f: getattr(definition, f) for f in LIFECYCLE_FIELDS}, **fields}
    changes_topology = "cml_lab_yaml" in fields and fields["cml_lab_yaml"] != definition.cml_lab_yaml
    trusted = _trust_after(current=definition.trusted, data=data, topology_changes=changes_topology,
                           may_trust=may_trust)
    if trusted != definition.trusted or changes_topology:  # written with the topology it was checked for
        fields["trusted"] = trusted
    if "cml_lab_yaml" in fields:
        validate_topology(fields["cml_lab_yaml"], trusted=trusted)
        fields["content_hash"] = LabletDefinition.hash_yaml(fields["cml_lab_yaml"])
    if "cml_lab_yaml" in fields or "port_definitions" in fields:
        validate_port_definitions(fields.get("cml_lab_yaml", definition.cml_lab_yaml),
                                  fields.get("port_definitions", definition.port_definitions) or [])
    _validate_lifecycle(merged)
    try:
        with transaction.atomic():
            locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
            if "trusted" in fields:
                _trust_unchanged_since_read(locked, definition)
            before = _snapshot(locked)
            for key, value in fields.items():
                setattr(locked, key, value)
            locked.save()
            audit_record(
                event_type="lablet_definition.updated",
                actor=actor,
                resource_type="lablet_definition",
                resource_id=locked.public_id,
                action="lablet_definition.update",
                metadata={"before": before, "after": _snapshot(locked)},
            )
    except IntegrityError:
        raise _unique_violation({"name": merged.get("name", definition.name), "version": merged.get("version", definition.version)})
    return locked


@transaction.atomic
def lablet_definition_delete(*, definition: LabletDefinition, user, actor: str) -> None:
    locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
    lablet_definition_check_change(definition=locked, user=user)
    live = locked.instances.filter(status__in=LIVE).count()
    total = locked.instances.count()
    if total:
        hint = f"{live} of them live" if live else "none of them live"
        raise Conflict(
            f"Lablet definition {locked.public_id} is used by {total} instance(s) ({hint}); "
            'deprecate it instead with PUT {"is_active": false}.'
        )
    warm = WarmLab.objects.filter(definition=locked).exclude(status=WarmLabStatus.RECYCLED).count()
    if warm:  # their labs run on CML, hold capacity and console ports: recycled first, never dropped
        raise Conflict(
            f"Lablet definition {locked.public_id} still has {warm} warm lab(s) on CML; set its warm_pool_depth "
            "to 0 (the pool is then recycled within a lifecycle tick or two) and delete it once they are gone.")
    audit_record(
        event_type="lablet_definition.deleted",
        actor=actor,
        resource_type="lablet_definition",
        resource_id=locked.public_id,
        action="lablet_definition.delete",
        metadata={"before": _snapshot(locked)},
    )
    locked.delete()


def lablet_definition_sync(*, definition: LabletDefinition, actor: str, lab_id: str = "",
                           worker_id: str = "", may_trust: bool = False) -> LabletDefinition:
    """Pull the topology back from a CML lab: `lab_id` on worker `worker_id`, or the definition's
    reference lab. Updates cml_lab_yaml and its content hash; the lab becomes the reference. Run by the sync's
    task: who may sync from which lab was decided before it was enqueued (lablet_definition_check_sync).

    422 without a lab to sync from, for an unknown worker or lab, for an export without a device a port definition
    names, or for an export that is not a topology or one the topology policy refuses (checked as untrusted unless the definition is trusted and the
    caller an admin, `may_trust`: anyone else's sync of a changed topology clears the mark); 502 when CML
    fails. The CML call happens before the database transaction."""
    from apps.workers import cml
    from apps.workers.services.cml import cml_credentials

    lab_id = lab_id or definition.reference_lab_id
    worker = _sync_worker(definition, worker_id)
    if not lab_id or worker is None:
        raise ValidationFailed(
            f"Lablet definition {definition.public_id} has no reference lab: send lab_id and worker_id.",
            errors={"lab_id": ["Required (the definition has no reference lab)."]},
        )
    creds = cml_credentials(worker)
    if creds is None:
        raise ValidationFailed(f"Worker {worker.public_id} has no address to reach its CML.",
                               errors={"worker_id": ["The worker has no address yet."]})
    try:
        text = cml.cml_lab_export_yaml(**creds, lab_id=lab_id)
    except cml.CmlError as exc:
        if exc.kind == cml.CmlError.NOT_FOUND:
            raise ValidationFailed(f"CML on worker {worker.public_id} has no lab {lab_id}.",
                                   errors={"lab_id": ["Unknown lab on that worker's CML."]})
        raise UpstreamUnavailable(f"CML on worker {worker.public_id} failed ({exc.kind}): {exc}")
    trusted = _trust_after(current=definition.trusted, data={}, topology_changes=text != definition.cml_lab_yaml,
                           may_trust=may_trust)
    validate_topology(text, trusted=trusted)
    validate_port_definitions(text, definition.port_definitions or [])
    with transaction.atomic():
        locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
        _trust_unchanged_since_read(locked, definition)
        before = {"content_hash": locked.content_hash, "reference_lab_id": locked.reference_lab_id,
                  "trusted": locked.trusted}
        locked.cml_lab_yaml = text
        locked.content_hash = LabletDefinition.hash_yaml(text)
        locked.reference_lab_id = lab_id
        locked.reference_worker = worker
        locked.synced_at = timezone.now()
        locked.trusted = trusted
        locked.save(update_fields=["cml_lab_yaml", "content_hash", "reference_lab_id", "reference_worker",
                                   "synced_at", "trusted", "updated_at"])
        audit_record(
            event_type="lablet_definition.synced",
            actor=actor,
            resource_type="lablet_definition",
            resource_id=locked.public_id,
            action="lablet_definition.sync",
            metadata={"before": before, "after": {"content_hash": locked.content_hash, "reference_lab_id": lab_id,
                                                  "worker_id": worker.public_id, "trusted": trusted},
                      "changed": before["content_hash"] != locked.content_hash},
        )
    return locked
