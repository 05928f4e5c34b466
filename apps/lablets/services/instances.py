"""Lablet instances: creation and the lifecycle, enforced in one function."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record_many
from apps.lablets.lifecycle import EXTENDABLE, STAMP_FIELD, TEARDOWN, TRANSITIONS
from apps.lablets.models import InstanceStatus, LabletDefinition, LabletInstance
from apps.lablets.services.console_access import student_cidr_clean
from apps.lablets.services.journal import instance_audit, instance_audit_entry
from apps.lablets.services.lease import lease_progress
from apps.core.errors import Conflict, InvalidTransition, ValidationFailed


@transaction.atomic
def lablet_instance_transition(*, instance: LabletInstance, to: str, actor: str, reason: str = "") -> LabletInstance:
    """Move one instance to `to`: its row locked, then lablet_instances_transition_many, the one place an
    instance's status changes (the edge checked against TRANSITIONS, the time of the state reached
    stamped, the change journalled), in one transaction."""
    locked = (
        LabletInstance.objects.select_for_update(of=("self",))
        .select_related("definition", "worker")
        .get(pk=instance.pk)
    )
    return lablet_instances_transition_many(instances=[locked], to=to, actor=actor, reason=reason)[0]


def lablet_instances_transition_many(*, instances: list[LabletInstance], to: str, actor: str, reason: str = "",
                                     changes: dict[int, dict] | None = None) -> list[LabletInstance]:
    """The only place an instance's status changes, for one instance (lablet_instance_transition) or the
    scheduler's pass over many.

    The caller holds the rows (locked, on PostgreSQL) inside its transaction and passes them as read.
    Every edge is checked against TRANSITIONS before anything is written; `changes` gives other fields
    to write per instance pk (e.g. the worker). One UPDATE per 500 rows, one audit row per instance.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lablet_instances_transition_many must run inside the caller's transaction")
    changes = changes or {}
    for instance in instances:
        if to not in TRANSITIONS[instance.status]:
            raise InvalidTransition("Lablet instance", instance.public_id, instance.status, to)
    now = timezone.now()
    stamp = STAMP_FIELD.get(to)
    events = []
    for instance in instances:
        source = instance.status
        for name, value in changes.get(instance.pk, {}).items():
            setattr(instance, name, value)
        instance.status = to
        if stamp:
            setattr(instance, stamp, now)
        instance.updated_at = now
        events.append(instance_audit_entry(instance, event_type=f"lablet_instance.{to}", actor=actor,
                                           action="lablet_instance.transition",
                                           metadata={"from": source, "to": to, "reason": reason}))
    # One UPDATE per distinct set of changes (the scheduler's pass: one per worker), not a CASE per row.
    groups: dict[tuple, list[int]] = {}
    for instance in instances:
        key = tuple(sorted((name, _column_value(value)) for name, value in changes.get(instance.pk, {}).items()))
        groups.setdefault(key, []).append(instance.pk)
    values = {"status": to, "updated_at": now, **({stamp: now} if stamp else {})}
    for key, pks in groups.items():
        for chunk in range(0, len(pks), 500):
            LabletInstance.objects.filter(pk__in=pks[chunk:chunk + 500]).update(**values, **dict(key))
    audit_record_many(events)
    return instances


def _column_value(value):
    """A model instance as its primary key (for update(worker=...)), anything else as is."""
    return value.pk if hasattr(value, "_meta") else value


def _check_timeslot(definition: LabletDefinition, start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValidationFailed(
            "timeslot_end must be after timeslot_start.",
            errors={"timeslot_end": ["Must be after timeslot_start."]},
        )
    minutes = (end - start).total_seconds() / 60
    if minutes > definition.max_duration_minutes:
        raise ValidationFailed(
            f"The timeslot lasts {minutes:g} minutes; lablet definition {definition.public_id} allows at most "
            f"{definition.max_duration_minutes}.",
            errors={"timeslot_end": [f"Duration exceeds max_duration_minutes ({definition.max_duration_minutes})."]},
        )


PAST_TOLERANCE = timedelta(minutes=5)  # a slot may start this long ago (a student arriving as it begins)


def _definition_for_create(definition_id: str) -> LabletDefinition:
    definition = LabletDefinition.objects.filter(public_id=definition_id).first()
    if definition is None:
        raise ValidationFailed(
            f"Lablet definition {definition_id} does not exist.",
            errors={"definition_id": ["Unknown lablet definition."]},
        )
    if not definition.is_active:
        raise ValidationFailed(
            f"Lablet definition {definition_id} is deprecated and takes no new instances.",
            errors={"definition_id": ["Deprecated lablet definition."]},
        )
    return definition


def _check_not_past(start: datetime, end: datetime, now: datetime) -> None:
    if end <= now or start < now - PAST_TOLERANCE:
        raise ValidationFailed(
            f"The timeslot starts in the past ({start.isoformat()}); book a slot that starts from now on.",
            errors={"timeslot_start": ["Must not be in the past."]},
        )


def lablet_instance_create(
    *,
    actor: str,
    user=None,
    definition_id: str,
    owner_id: str,
    timeslot_start: datetime,
    timeslot_end: datetime | None = None,
    reservation_id: str = "",
    priority: int = 5,
    reserve: bool = True,
    place: bool = True,
    student_cidr: str = "",
) -> LabletInstance:
    """Book a lab for `owner_id` and place it at once (admission at booking time).

    The instance is SCHEDULED on a worker with room for the whole slot, or stays PENDING as a
    reservation placed as soon as capacity frees; with `reserve=False` no room is a 409 instead. A slot
    that has begun takes a READY warm lab of a definition with a warm pool when there is one
    (apps.lablets.services.warm): the instance is RUNNING when this returns.
    `place=False` leaves it PENDING for the caller to place with others (a roster: one batch placement).
    """
    from apps.lablets.placement import Planner, need_of
    from apps.lablets.services.scheduling import (
        advisory_lock, check_owner_overlap, check_quotas, lablet_instance_place, no_room_summary)
    from apps.lablets.services.warm import is_start_now, warm_lab_take

    student_cidr = student_cidr_clean(student_cidr)  # 422 before anything is booked
    definition = _definition_for_create(definition_id)
    if timeslot_end is None:
        timeslot_end = timeslot_start + timedelta(minutes=definition.default_duration_minutes)
    _check_timeslot(definition, timeslot_start, timeslot_end)
    _check_not_past(timeslot_start, timeslot_end, timezone.now())
    with transaction.atomic():
        advisory_lock(f"lablet-owner:{owner_id}")
        instructor_quota = settings.QUOTA_INSTRUCTOR_MAX_LIVE or settings.QUOTA_INSTRUCTOR_MAX_MINUTES_PER_DAY
        if instructor_quota and user is not None and getattr(user, "pk", None):
            advisory_lock(f"lablet-creator:{user.pk}")  # only then: it serialises one instructor's bookings
        check_owner_overlap(owner_id=owner_id, start=timeslot_start, end=timeslot_end)
        check_quotas(user=user, owner_id=owner_id, start=timeslot_start, end=timeslot_end)
        instance = LabletInstance.objects.create(
            definition=definition,
            owner_id=owner_id,
            created_by=user,
            timeslot_start=timeslot_start,
            timeslot_end=timeslot_end,
            reservation_id=reservation_id,
            student_cidr=student_cidr,
            priority=priority,
            cpu_cores=definition.cpu_cores,
            memory_gb=definition.memory_gb,
            storage_gb=definition.storage_gb,
            node_count=definition.node_count,
            port_count=len(definition.port_definitions or []),
        )
        instance_audit(
            instance,
            event_type="lablet_instance.created",
            actor=actor,
            action="lablet_instance.create",
            metadata={
                "after": {
                    "status": instance.status,
                    "timeslot_start": timeslot_start.isoformat(),
                    "timeslot_end": timeslot_end.isoformat(),
                    "priority": priority,
                    "reservation_id": reservation_id,
                    "student_cidr": student_cidr,
                }
            },
        )
        if not place:
            return instance
        warm_lease = None
        if definition.warm_pool_depth and is_start_now(timeslot_start, timezone.now()):  # taken over at once
            warm_lease = warm_lab_take(instance=instance, actor=actor)
        if warm_lease is not None:
            # The lab is booted: RUNNING once the booking is committed (network calls, no transaction open).
            # Here, when this creation is the outermost transaction; when a roster books it inside its own
            # (every worker locked), once the roster commits, never while the fleet is locked.
            from apps.lablets.engine import warm_lab_hand_over

            lease, pk = warm_lease, instance.pk
            transaction.on_commit(lambda: warm_lab_hand_over(pk, until=lease, now=timezone.now(), actor=actor))
        if warm_lease is None:
            instance = lablet_instance_place(instance=instance, actor=actor)
        if warm_lease is None and instance.status == InstanceStatus.PENDING and not reserve:
            planner = Planner.for_slot(timeslot_start, timeslot_end, exclude_pk=instance.pk)
            why = no_room_summary(planner.assess_all(need_of(instance), timeslot_start, timeslot_end))
            raise Conflict(
                f"No worker has room for lablet definition {definition.public_id} for the whole timeslot "
                f"{timeslot_start.isoformat()} to {timeslot_end.isoformat()} ({why}). Send \"reserve\": true "
                "to keep a pending reservation, or POST /api/scheduler/preview to see each worker's reason.",
                extra={"reason": "no_capacity"},
            )
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=instance.pk)


def lablet_instance_start_collection(*, instance: LabletInstance, actor: str) -> LabletInstance:
    """RUNNING → COLLECTING with the node configurations extracted through CML as the artifacts
    (apps.lablets.engine.collection); 502 and still RUNNING when CML fails."""
    from apps.lablets.engine import instance_collect

    return instance_collect(instance=instance, actor=actor)


def lablet_instance_start_grading(*, instance: LabletInstance, actor: str) -> LabletInstance:
    return lablet_instance_transition(instance=instance, to=InstanceStatus.GRADING, actor=actor, reason="grading requested")


def lablet_instance_terminate(*, instance: LabletInstance, actor: str, reason: str = "terminate requested") -> LabletInstance:
    """End the instance from any state, never leaving its lab on CML (apps.lablets.engine.instance_terminate):
    without a lab straight to TERMINATED, with one through STOPPING → STOPPED → ARCHIVED → TERMINATED,
    run at once as far as it goes; whatever is left (CML down, another process mid-step) the tick finishes."""
    from apps.lablets.engine import instance_terminate

    return instance_terminate(instance=instance, actor=actor, reason=reason)


@transaction.atomic
def lablet_instance_extend(
    *, instance: LabletInstance, actor: str, minutes: int | None = None, timeslot_end: datetime | None = None
) -> LabletInstance:
    """Move the end of the timeslot later: within the definition's max duration, and only if the worker
    (for a placed instance) has room for the extra interval and the owner holds nothing else then."""
    from apps.lablets.placement import Planner, need_of
    from apps.lablets.services.scheduling import check_owner_overlap
    from apps.workers.models import Worker

    locked = (
        LabletInstance.objects.select_for_update(of=("self",))
        .select_related("definition", "worker")
        .get(pk=instance.pk)
    )
    if locked.status not in EXTENDABLE:
        raise Conflict(f"Lablet instance {locked.public_id} is {locked.status}; only live instances can be extended.")
    new_end = timeslot_end or locked.timeslot_end + timedelta(minutes=minutes or 0)
    if new_end <= locked.timeslot_end:
        raise ValidationFailed(
            "An extension must move timeslot_end later.",
            errors={"timeslot_end": [f"Must be after the current end {locked.timeslot_end.isoformat()}."]},
        )
    _check_timeslot(locked.definition, locked.timeslot_start, new_end)
    old_end = locked.timeslot_end
    check_owner_overlap(owner_id=locked.owner_id, start=old_end, end=new_end, exclude_pk=locked.pk)
    if locked.worker_id:
        worker = Worker.objects.select_for_update().get(pk=locked.worker_id)
        planner = Planner.for_slot(old_end, new_end, exclude_pk=locked.pk, workers=[worker])
        verdict = planner.assess_all(need_of(locked), old_end, new_end)[0]
        if not verdict.fits and verdict.reason in ("capacity", "ports", "licence"):
            raise Conflict(
                f"Worker {worker.public_id} has no room to extend lablet instance {locked.public_id} to "
                f"{new_end.isoformat()}: {verdict.detail}.",
                extra={"reason": verdict.reason},
            )
    locked.timeslot_end = new_end
    locked.expiring_notified_at = None  # a new end: warn again before it
    locked.save(update_fields=["timeslot_end", "expiring_notified_at", "updated_at"])
    instance_audit(
        locked,
        event_type="lablet_instance.extended",
        actor=actor,
        action="lablet_instance.extend",
        metadata={"before": {"timeslot_end": old_end.isoformat()}, "after": {"timeslot_end": new_end.isoformat()}},
    )
    return locked


GRADED_REASON = "graded"  # the termination reason of an instance released once graded
TERMINATE_TASK = "apps.lablets.tasks.terminate_instance"


def _release_graded(instance: LabletInstance, *, actor: str, now: datetime) -> None:
    """The graded instance ends now (STOPPING); its teardown runs in the q cluster after the commit (or at the
    next lifecycle tick, which also ends any graded instance left GRADING: apps.lablets.engine.tick)."""
    from apps.lablets.engine import instance_end

    ended = instance_end(instance=instance, actor=actor, reason=GRADED_REASON, now=now)
    if ended.status in TEARDOWN:
        def dispatch():
            from django_q.tasks import async_task

            async_task(TERMINATE_TASK, ended.pk, actor, task_name=f"graded-teardown-{ended.public_id}")
        transaction.on_commit(dispatch)


@transaction.atomic
def lablet_instance_record_grading(*, instance: LabletInstance, actor: str, score: float, max_score: float,
                                   details=None) -> LabletInstance:
    """A grader's result for a GRADING instance: stored as `grading_result` with the time and the grader,
    `lablet_instance.graded` in the journal. 409 unless grading; 422 for a score outside 0..max_score.

    Then, unless its definition keeps the lab until the slot ends (`keep_lab_until_slot_end`), the instance
    ends with reason "graded" (apps.lablets.engine.instance_end: STOPPING, in this transaction) and its
    teardown (stop, archive, delete; the archive is kept) is enqueued once this commits: the capacity it held
    is freed as it leaves the teardown's STOPPING, without waiting for the slot's end (docs/lifecycle.md)."""
    locked = (
        LabletInstance.objects.select_for_update(of=("self",))
        .select_related("definition", "worker")
        .get(pk=instance.pk)
    )
    if locked.status != InstanceStatus.GRADING:
        raise Conflict(f"Lablet instance {locked.public_id} is {locked.status}; a grading result is accepted "
                       "only while it is grading (POST .../start-grading first).")
    errors = {}
    if max_score < 0:
        errors["max_score"] = ["Must be zero or more."]
    if score < 0:
        errors["score"] = ["Must be zero or more."]
    elif score > max_score:
        errors["score"] = [f"Must not exceed max_score ({max_score:g})."]
    if errors:
        raise ValidationFailed("The grading result is not valid.", errors=errors)
    now = timezone.now()
    result = {"score": score, "max_score": max_score, "details": details, "graded_at": now.isoformat(),
              "graded_by": actor}
    LabletInstance.objects.filter(pk=locked.pk).update(grading_result=result, last_activity_at=now, updated_at=now)
    instance_audit(locked, event_type="lablet_instance.graded", actor=actor, action="lablet_instance.grade",
           metadata={"score": score, "max_score": max_score})
    if not locked.definition.keep_lab_until_slot_end:
        _release_graded(locked, actor=actor, now=now)
    return LabletInstance.objects.select_related("definition", "worker", "created_by").get(pk=locked.pk)


def lablet_instance_record_activity(*, instance: LabletInstance, at: datetime | None = None) -> LabletInstance:
    """A student is using the lab (a portal or the lab tooling says so): pushes the idle timeout out.

    One UPDATE, like a heartbeat, and not journalled (it changes no state). Only a RUNNING, COLLECTING
    or GRADING instance records activity; 409 otherwise."""
    at = at or timezone.now()
    updated = LabletInstance.objects.filter(
        pk=instance.pk, status__in=(InstanceStatus.RUNNING, InstanceStatus.COLLECTING, InstanceStatus.GRADING)
    ).update(last_activity_at=at)
    if not updated:
        raise Conflict(f"Lablet instance {instance.public_id} is {instance.status}; only a running lab records "
                       "activity.")
    instance.last_activity_at = at
    return instance


PROGRESS_STEPS = ("importing", "starting", "booting")  # an instantiation's steps, in order


def progress_text(step: str, *, nodes_booted: int | None = None, nodes_total: int | None = None) -> str:
    if step == "booting":
        return f"nodes booting {nodes_booted}/{nodes_total}"
    return {"importing": "importing the lab into CML", "starting": "starting the lab"}[step]


@transaction.atomic
def lablet_instance_record_progress(*, instance: LabletInstance, step: str, actor: str,
                                    nodes_booted: int | None = None, nodes_total: int | None = None,
                                    claimed_until: datetime | None = None) -> bool:
    """How far an INSTANTIATING instance got, for the pages: `lifecycle_step` takes the step's text
    ('importing the lab into CML', 'starting the lab', 'nodes booting 3/5') and `lablet_instance.progressed`
    is journalled with {step, text, nodes_booted, nodes_total}; the live stream carries it to open pages.
    The same text again writes and journals nothing: one event per change (a new n of n/m is a change).
    With `claimed_until`, only while that engine claim is held. Returns whether it changed."""
    if step not in PROGRESS_STEPS:
        raise ValueError(f"unknown progress step {step!r}")
    text = progress_text(step, nodes_booted=nodes_booted, nodes_total=nodes_total)
    if not lease_progress(instance.pk, text=text, claimed_until=claimed_until):
        return False
    instance_audit(instance, event_type="lablet_instance.progressed", actor=actor, action="lablet_instance.progress",
           metadata={"step": step, "text": text, "nodes_booted": nodes_booted, "nodes_total": nodes_total})
    return True
