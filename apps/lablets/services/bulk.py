"""Bookings for a class roster: one definition and timeslot, many owners (docs/api.md, "Rosters").

Each owner goes through `lablet_instance_create`, so every create-time rule (owner overlap, quotas,
`reserve`) applies per owner exactly as for a single create. With `reserve` (the default) the owners
are then placed in one batch, in roster order, under the same worker locks as the scheduler pass
(a roster of 200 costs one placement pass, not 200); with `reserve=false` each owner is placed as
it is booked, since a refused owner must not be kept. The checks
every owner shares (the definition and the timeslot) run once, up front: they fail the whole request.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.lablets.models import InstanceStatus, LabletDefinition, LabletInstance
from apps.lablets.services.instances import (
    _check_not_past,
    _check_timeslot,
    _definition_for_create,
    lablet_instance_create,
)
from apps.lablets.services.scheduling import advisory_lock, lablet_instances_place_batch
from apps.workers.models import Worker, WorkerStatus
from apps.core.errors import Conflict, DomainError


def lablet_booking_resolve(
    *, definition_id: str, timeslot_start: datetime, timeslot_end: datetime | None = None
) -> tuple[LabletDefinition, datetime, datetime]:
    """The definition and the timeslot of a booking, checked as a create checks them (422 each):
    unknown or deprecated definition, end not after start, longer than the max duration, in the past.
    The end defaults to start + the definition's default duration. Used by the roster create and by
    the scheduler preview."""
    definition = _definition_for_create(definition_id)
    if timeslot_end is None:
        timeslot_end = timeslot_start + timedelta(minutes=definition.default_duration_minutes)
    _check_timeslot(definition, timeslot_start, timeslot_end)
    _check_not_past(timeslot_start, timeslot_end, timezone.now())
    return definition, timeslot_start, timeslot_end


def _error(exc: DomainError) -> dict:
    """A refused owner's error: the problem's status, title and detail, plus its extension members."""
    return {"status": exc.status_code, "title": exc.title, "detail": exc.detail, **exc.extra,
            **({"errors": exc.errors} if exc.errors else {})}


def _totals(results: list[dict]) -> dict:
    created = [row["instance"] for row in results if row["ok"]]
    return {
        "requested": len(results),
        "created": len(created),
        "scheduled": sum(1 for i in created if i.status == InstanceStatus.SCHEDULED),
        "pending": sum(1 for i in created if i.status == InstanceStatus.PENDING),
        "failed": len(results) - len(created),
    }


def _create_each(*, owner_ids: list[str], **create) -> list[dict]:
    results, first_index = [], {}
    for index, owner_id in enumerate(owner_ids):
        if owner_id in first_index:
            results.append({"owner_id": owner_id, "ok": False, "instance": None, "error": {
                "status": 422, "title": "Duplicate owner",
                "detail": f"owner_id {owner_id} appears more than once in owner_ids (first at index "
                          f"{first_index[owner_id]}); it is booked once."}})
            continue
        first_index[owner_id] = index
        try:
            # With reserve (the default) the roster is placed in one batch afterwards (_place_roster);
            # with reserve=false each owner must learn at once whether there is room: placed one by one.
            instance = lablet_instance_create(owner_id=owner_id, place=not create["reserve"], **create)
        except DomainError as exc:  # its own transaction (or savepoint) is rolled back: nothing left behind
            results.append({"owner_id": owner_id, "ok": False, "instance": None, "error": _error(exc)})
        else:
            results.append({"owner_id": owner_id, "ok": True, "instance": instance, "error": None})
    return results


def _place_roster(results: list[dict], *, actor: str) -> None:
    """One batch placement for the owners just booked (roster order), then their rows read back once."""
    pks = [row["instance"].pk for row in results if row["ok"]]
    if not pks:
        return
    lablet_instances_place_batch(pks=pks, actor=actor)
    fresh = LabletInstance.objects.select_related("definition", "worker", "created_by").in_bulk(pks)
    for row in results:
        if row["ok"]:
            row["instance"] = fresh[row["instance"].pk]


class _RollBack(Exception):
    pass


def lablet_instances_create_bulk(
    *,
    actor: str,
    user=None,
    definition_id: str,
    owner_ids: list[str],
    timeslot_start: datetime,
    timeslot_end: datetime | None = None,
    reservation_id: str = "",
    priority: int = 5,
    reserve: bool = True,
    all_or_nothing: bool = False,
) -> dict:
    """Book `definition_id` in one timeslot for every owner of a roster, in roster order.

    Returns {"definition_id", "timeslot_start", "timeslot_end", "all_or_nothing", "totals", "results"};
    a result is {"owner_id", "ok", "instance" (the LabletInstance) or None, "error" or None}, where an
    error is {"status", "title", "detail", ...the problem's extension members}. A repeated owner is
    refused on its later rows (422, "Duplicate owner").

    Without `all_or_nothing` every owner is booked in its own transaction: the others stand whatever
    one owner's fate. With it, the whole roster is one transaction: every owner is still tried (each
    in a savepoint, so the answer lists every owner that would fail, not just the first), and if any
    fails everything is rolled back and Conflict (409) is raised with the per-owner `results` (no
    instances; the owners that would have been booked carry a 409 "Rolled back" error) and `totals`.
    """
    definition, start, end = lablet_booking_resolve(
        definition_id=definition_id, timeslot_start=timeslot_start, timeslot_end=timeslot_end)
    create = {"actor": actor, "user": user, "definition_id": definition.public_id, "timeslot_start": start,
              "timeslot_end": end, "reservation_id": reservation_id, "priority": priority, "reserve": reserve}
    outcome = {"definition_id": definition.public_id, "timeslot_start": start, "timeslot_end": end,
               "all_or_nothing": all_or_nothing}
    if not all_or_nothing:
        results = _create_each(owner_ids=owner_ids, **create)
        if reserve:
            _place_roster(results, actor=actor)
        return {**outcome, "totals": _totals(results), "results": results}
    try:
        with transaction.atomic():
            # This transaction keeps every worker row it books locked until the end: one such roster at a
            # time, so that two of them cannot wait on each other's workers (PostgreSQL; SQLite serialises).
            advisory_lock("lablet-bulk-all-or-nothing")
            # Take every lock this transaction will need before the first booking, in one fixed order:
            # the owners (sorted), then every worker (by pk, the scheduler pass's order). Holding worker
            # rows while waiting for an owner lock held by a single create (which itself waits for one
            # of those workers) would be a deadlock; so would taking workers in another order than the pass.
            for owner_id in sorted(set(owner_ids)):
                advisory_lock(f"lablet-owner:{owner_id}")
            if user is not None and getattr(user, "pk", None):
                advisory_lock(f"lablet-creator:{user.pk}")  # the same order as a single create: owner, creator
            list(Worker.objects.select_for_update().exclude(status=WorkerStatus.TERMINATED).order_by("pk")
                 .values_list("pk", flat=True))
            results = _create_each(owner_ids=owner_ids, **create)
            if any(not row["ok"] for row in results):
                raise _RollBack
            if reserve:
                _place_roster(results, actor=actor)
    except _RollBack:
        failed = sum(1 for row in results if not row["ok"])
        rolled_back = {"status": 409, "title": "Rolled back",
                       "detail": f"Would have been booked; rolled back because {failed} owner(s) failed "
                                 "(all_or_nothing)."}
        rows = [{"owner_id": row["owner_id"], "ok": False, "instance": None,
                 "error": row["error"] or rolled_back} for row in results]
        first = next(row for row in results if not row["ok"])
        raise Conflict(
            f"{failed} of {len(results)} owner(s) could not be booked (the first: {first['owner_id']}: "
            f"{first['error']['detail']}); all_or_nothing: nothing was booked.",
            extra={"totals": {"requested": len(rows), "created": 0, "scheduled": 0, "pending": 0,
                              "failed": failed},
                   "results": rows},
        )
    return {**outcome, "totals": _totals(results), "results": results}
