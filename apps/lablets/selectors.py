"""Reads of lablet definitions and instances, with what lists need joined in."""

from django.db import models
from django.db.models import QuerySet

from apps.lablets.lifecycle import CONSOLE_OPEN
from apps.lablets.models import LabletDefinition, LabletInstance
from apps.api.permissions import privileged
from apps.core.sqltime import IsoDateTime


# Console types a browser console serves (a byte stream, telnet negotiation answered); VNC may follow.
BROWSER_CONSOLE_TYPES = frozenset({"serial", "telnet"})


def lablet_instance_browser_consoles(*, instance: LabletInstance, held: set[tuple[str, int]] | None = None) -> list[dict]:
    """The instance's console entries a browser console may open: its lab is up (CONSOLE_OPEN), the entry is a
    serial/telnet one with a host and port, and the instance holds that port (`held`: its (name, port) console
    port rows, read when not given)."""
    if instance.status not in CONSOLE_OPEN or not instance.console:
        return []
    if held is None:
        held = set(instance.console_ports.values_list("name", "port"))
    return [entry for entry in instance.console
            if entry.get("console_type") in BROWSER_CONSOLE_TYPES and entry.get("host") and entry.get("name")
            and (entry["name"], entry.get("port")) in held]


def lablet_definition_list(*, filters: dict | None = None) -> QuerySet[LabletDefinition]:
    filters = filters or {}
    qs = LabletDefinition.objects.select_related("created_by", "owner", "reference_worker")
    if filters.get("name"):
        qs = qs.filter(name=filters["name"])
    if filters.get("is_active") is not None:
        qs = qs.filter(is_active=filters["is_active"])
    return qs


def lablet_instance_visible_to(*, user) -> QuerySet[LabletInstance]:
    """Admins and operators see every instance; instructors only those they created."""
    qs = LabletInstance.objects.select_related("definition", "worker", "created_by")
    if privileged(user):
        return qs
    return qs.filter(created_by=user)


# The columns of a list row: every instance column plus what the list shows of the joined rows.
# Timestamps come as the text DRF would write (`iso_<name>`), by the database: LabletInstanceSerializer.represent_row.
INSTANCE_TIMESTAMPS = tuple(field.name for field in LabletInstance._meta.concrete_fields
                            if isinstance(field, models.DateTimeField))
INSTANCE_ROW_COLUMNS = tuple(
    field.attname if field.is_relation else field.name for field in LabletInstance._meta.concrete_fields
    if field.name not in INSTANCE_TIMESTAMPS
) + ("definition__public_id", "definition__name", "definition__version", "worker__public_id", "created_by__username")


def lablet_instance_rows(queryset: QuerySet[LabletInstance]):
    """A page of instances as plain rows (one query, joins included), for LabletInstanceSerializer.represent_row."""
    return queryset.values(*INSTANCE_ROW_COLUMNS,
                           **{f"iso_{name}": IsoDateTime(name, suffix="Z") for name in INSTANCE_TIMESTAMPS})


def lablet_instance_list(*, user, filters: dict | None = None) -> QuerySet[LabletInstance]:
    filters = filters or {}
    qs = lablet_instance_visible_to(user=user)
    if filters.get("status"):
        qs = qs.filter(status__in=filters["status"])
    elif not filters.get("include_terminated"):
        qs = qs.exclude(status="terminated")
    if filters.get("owner_id"):
        qs = qs.filter(owner_id=filters["owner_id"])
    if filters.get("definition_id"):
        qs = qs.filter(definition__public_id=filters["definition_id"])
    if filters.get("worker_id"):
        qs = qs.filter(worker__public_id=filters["worker_id"])
    return qs
