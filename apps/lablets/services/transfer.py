"""Moving lablet definitions between installations (the export_definitions and import_definitions commands;
docs/operations.md#moving-lablet-definitions-between-installations): the file's format, the export, the
parsing of a file, and the import.

The file is a JSON document:
    {"format": "labmanager.lablet-definitions", "format_version": 1, "exported_at": "...",
     "definitions": [{"name", "version", "description", "cml_lab_yaml", "content_hash",
                      "resource_requirements": {...}, "lifecycle": {...}, "port_definitions": [...],
                      "is_active"}, ...]}
The shape of one entry is the API's (POST /api/lablet-definitions) plus `content_hash`, which the import
checks against `cml_lab_yaml`.

The import is idempotent: a (name, version) already here with the same content is left alone; one with
different content is a conflict (a version is meant to be immutable) unless `update` is given. All or
nothing. It writes through the definition services (lablet_definition_create, lablet_definition_update).
"""

import json

from django.db import transaction
from django.utils import timezone

from apps.lablets.models import LabletDefinition
from apps.lablets.services.definitions import (
    LIFECYCLE_FIELDS,
    REQUIREMENT_FIELDS,
    lablet_definition_create,
    lablet_definition_update,
    validate_topology,
)
from apps.core.errors import Conflict, ValidationFailed

FORMAT = "labmanager.lablet-definitions"
FORMAT_VERSION = 1
CREATED, UNCHANGED, UPDATED, CONFLICT = "created", "unchanged", "updated", "conflict"


class TransferError(Exception):
    """A document that cannot be imported; `problems` are one line each, naming the entry and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def definition_entry(definition: LabletDefinition) -> dict:
    return {
        "name": definition.name,
        "version": definition.version,
        "description": definition.description,
        "cml_lab_yaml": definition.cml_lab_yaml,
        "content_hash": definition.content_hash,
        "resource_requirements": {field: getattr(definition, field) for field in REQUIREMENT_FIELDS},
        "lifecycle": {field: getattr(definition, field) for field in LIFECYCLE_FIELDS},
        "port_definitions": definition.port_definitions,
        "is_active": definition.is_active,
    }


def export_document(*, names: list[str] | None = None, active_only: bool = False) -> dict:
    """Every definition (or those named), every version, in (name, version) order."""
    definitions = LabletDefinition.objects.order_by("name", "version")
    if names:
        definitions = definitions.filter(name__in=names)
    if active_only:
        definitions = definitions.filter(is_active=True)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": timezone.now().isoformat(),
        "definitions": [definition_entry(definition) for definition in definitions],
    }


def _field_errors(errors, prefix: str = "") -> list[str]:
    """DRF's nested error dict → 'lifecycle.max_duration_minutes: ...' lines."""
    if isinstance(errors, dict):
        return [line for key, value in errors.items() for line in _field_errors(value, f"{prefix}{key}.")]
    if isinstance(errors, list) and errors and not isinstance(errors[0], str):
        return [line for i, value in enumerate(errors) for line in _field_errors(value, f"{prefix}{i}.") if value]
    return [f"{prefix.rstrip('.')}: {' '.join(str(e) for e in errors)}"]


def parse_document(text: str) -> list[dict]:
    """Validated entries of an export, in the API's input shape; TransferError lists every problem."""
    from apps.lablets.api.serializers import LabletDefinitionWriteSerializer

    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TransferError([f"Not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."])
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TransferError([f'Not a lablet definitions export: expected "format": "{FORMAT}".'])
    if document.get("format_version") != FORMAT_VERSION:
        raise TransferError([f"Unsupported format_version {document.get('format_version')!r}; "
                             f"this installation reads {FORMAT_VERSION}."])
    entries = document.get("definitions")
    if not isinstance(entries, list):
        raise TransferError(['"definitions" must be a list.'])

    problems, parsed, seen = [], [], set()
    for index, entry in enumerate(entries):
        label = f"definitions[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{label}: not an object.")
            continue
        label += f" ({entry.get('name', '?')} {entry.get('version', '?')})"
        serializer = LabletDefinitionWriteSerializer(data=entry)
        if not serializer.is_valid():
            problems.extend(f"{label} {line}" for line in _field_errors(serializer.errors))
            continue
        data = serializer.validated_data
        try:  # imported definitions are not trusted (an admin marks them again)
            validate_topology(data["cml_lab_yaml"], trusted=False)
        except ValidationFailed as exc:
            problems.extend(f"{label} cml_lab_yaml: {line}" for line in exc.errors["cml_lab_yaml"])
            continue
        expected = entry.get("content_hash")
        if expected and expected != LabletDefinition.hash_yaml(data["cml_lab_yaml"]):
            problems.append(f"{label} content_hash: does not match cml_lab_yaml (the file was edited or damaged).")
            continue
        key = (data["name"], data["version"])
        if key in seen:
            problems.append(f"{label}: the same name and version appear twice in the file.")
            continue
        seen.add(key)
        data = json.loads(json.dumps(data))  # OrderedDicts → plain dicts, as stored
        data["lifecycle"].setdefault(
            "max_duration_minutes", max(240, data["lifecycle"]["default_duration_minutes"]))
        parsed.append(data)
    if problems:
        raise TransferError(problems)
    return parsed


class _DryRun(Exception):
    pass


def _differences(definition: LabletDefinition, entry: dict) -> list[str]:
    current = {
        "description": definition.description,
        "cml_lab_yaml": definition.cml_lab_yaml,
        "port_definitions": definition.port_definitions,
        "is_active": definition.is_active,
        **{f"resource_requirements.{f}": getattr(definition, f) for f in REQUIREMENT_FIELDS},
        **{f"lifecycle.{f}": getattr(definition, f) for f in LIFECYCLE_FIELDS},
    }
    wanted = {
        "description": entry["description"],
        "cml_lab_yaml": entry["cml_lab_yaml"],
        "port_definitions": entry["port_definitions"],
        "is_active": entry["is_active"],
        **{f"resource_requirements.{f}": entry["resource_requirements"][f] for f in REQUIREMENT_FIELDS},
        **{f"lifecycle.{f}": entry["lifecycle"][f] for f in LIFECYCLE_FIELDS},
    }
    return [field for field in current if current[field] != wanted[field]]


def lablet_definitions_import(*, entries: list[dict], actor: str, update: bool = False,
                              dry_run: bool = False) -> list[dict]:
    """Create or (with `update`) change definitions; returns one {name, version, result, changed} per
    entry. Raises Conflict, writing nothing, when an existing version differs and `update` is false."""
    results = []
    try:
        with transaction.atomic():
            for entry in entries:
                existing = (LabletDefinition.objects.select_for_update()
                            .filter(name=entry["name"], version=entry["version"]).first())
                result = {"name": entry["name"], "version": entry["version"], "changed": []}
                if existing is None:
                    lablet_definition_create(actor=actor, data=entry)
                    result["result"] = CREATED
                elif not (changed := _differences(existing, entry)):
                    result["result"] = UNCHANGED
                elif update:
                    lablet_definition_update(definition=existing, user=None, actor=actor, data=entry)  # a command
                    result.update(result=UPDATED, changed=changed)
                else:
                    result.update(result=CONFLICT, changed=changed)
                results.append(result)
            conflicts = [r for r in results if r["result"] == CONFLICT]
            if conflicts:
                raise Conflict(
                    "These definitions exist here with different content; nothing was imported "
                    "(import with --update to overwrite them, or give the new content a new version): "
                    + "; ".join(f"{r['name']} {r['version']} ({', '.join(r['changed'])})" for r in conflicts)
                )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return results
