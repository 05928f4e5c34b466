"""Import lablet definitions exported by another installation (apps/lablets/transfer.py has the format).

Idempotent: a (name, version) already here with the same content is left alone. One with different
content is a conflict (a version is meant to be immutable) unless `update` is given. All or nothing.
"""

from django.db import transaction

from apps.lablets.models import LabletDefinition
from apps.lablets.services.definitions import (
    LIFECYCLE_FIELDS,
    REQUIREMENT_FIELDS,
    lablet_definition_create,
    lablet_definition_update,
)
from apps.core.errors import Conflict

CREATED, UNCHANGED, UPDATED, CONFLICT = "created", "unchanged", "updated", "conflict"


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
                    lablet_definition_update(definition=existing, actor=actor, data=entry)
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
