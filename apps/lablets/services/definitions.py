"""Lablet definitions: create, update, delete, sync."""

import yaml
from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.lablets.lifecycle import LIVE
from apps.lablets.models import LabletDefinition
from labmanager.errors import Conflict, NotImplementedYet, ValidationFailed

REQUIREMENT_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "node_count")
LIFECYCLE_FIELDS = ("default_duration_minutes", "max_duration_minutes", "idle_timeout_minutes")
SNAPSHOT_FIELDS = ("name", "version", "description", "content_hash", "is_active") + REQUIREMENT_FIELDS + LIFECYCLE_FIELDS


def _snapshot(definition: LabletDefinition) -> dict:
    return {field: getattr(definition, field) for field in SNAPSHOT_FIELDS}


def validate_cml_yaml(text: str) -> None:
    """The topology must parse as YAML and be a mapping (a CML lab export)."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationFailed(
            f"cml_lab_yaml is not valid YAML{where}.",
            errors={"cml_lab_yaml": [f"Invalid YAML{where}: {getattr(exc, 'problem', exc)}"]},
        )
    if not isinstance(parsed, dict):
        raise ValidationFailed(
            "cml_lab_yaml must be a YAML mapping (a CML lab topology).",
            errors={"cml_lab_yaml": ["Expected a mapping at the top level."]},
        )


def _validate_lifecycle(fields: dict) -> None:
    if fields["max_duration_minutes"] < fields["default_duration_minutes"]:
        raise ValidationFailed(
            "lifecycle.max_duration_minutes must be at least lifecycle.default_duration_minutes.",
            errors={"lifecycle.max_duration_minutes": ["Must be >= default_duration_minutes."]},
        )


def _flatten(data: dict) -> dict:
    """API shape (nested resource_requirements/lifecycle) → model fields."""
    fields = {key: data[key] for key in ("name", "version", "description", "cml_lab_yaml", "port_definitions", "is_active") if key in data}
    fields.update({key: data["resource_requirements"][key] for key in REQUIREMENT_FIELDS if key in data.get("resource_requirements", {})})
    fields.update({key: data["lifecycle"][key] for key in LIFECYCLE_FIELDS if key in data.get("lifecycle", {})})
    return fields


def _unique_violation(fields: dict) -> Conflict:
    return Conflict(f"A lablet definition named '{fields['name']}' with version '{fields['version']}' already exists.")


def lablet_definition_create(*, actor: str, user=None, data: dict) -> LabletDefinition:
    fields = _flatten(data)
    fields.setdefault("default_duration_minutes", 120)
    fields.setdefault("max_duration_minutes", max(240, fields["default_duration_minutes"]))
    validate_cml_yaml(fields["cml_lab_yaml"])
    _validate_lifecycle(fields)
    fields["content_hash"] = LabletDefinition.hash_yaml(fields["cml_lab_yaml"])
    try:
        with transaction.atomic():
            definition = LabletDefinition.objects.create(created_by=user, **fields)
            audit_record(
                event_type="lablet_definition.created",
                actor=actor,
                resource_type="lablet_definition",
                resource_id=definition.public_id,
                action="lablet_definition.create",
                metadata={"after": _snapshot(definition)},
            )
    except IntegrityError:
        raise _unique_violation(fields)
    return definition


def lablet_definition_update(*, definition: LabletDefinition, actor: str, data: dict) -> LabletDefinition:
    fields = _flatten(data)
    merged = {**{f: getattr(definition, f) for f in LIFECYCLE_FIELDS}, **fields}
    if "cml_lab_yaml" in fields:
        validate_cml_yaml(fields["cml_lab_yaml"])
        fields["content_hash"] = LabletDefinition.hash_yaml(fields["cml_lab_yaml"])
    _validate_lifecycle(merged)
    try:
        with transaction.atomic():
            locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
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
def lablet_definition_delete(*, definition: LabletDefinition, actor: str) -> None:
    locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
    live = locked.instances.filter(status__in=LIVE).count()
    total = locked.instances.count()
    if total:
        hint = f"{live} of them live" if live else "none of them live"
        raise Conflict(
            f"Lablet definition {locked.public_id} is used by {total} instance(s) ({hint}); "
            'deprecate it instead with PUT {"is_active": false}.'
        )
    audit_record(
        event_type="lablet_definition.deleted",
        actor=actor,
        resource_type="lablet_definition",
        resource_id=locked.public_id,
        action="lablet_definition.delete",
        metadata={"before": _snapshot(locked)},
    )
    locked.delete()


def lablet_definition_sync(*, definition: LabletDefinition, actor: str) -> LabletDefinition:
    raise NotImplementedYet(
        "Syncing a definition from CML needs the CML client of the workers capability, which is not built yet."
    )
