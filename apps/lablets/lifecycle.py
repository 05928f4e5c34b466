"""The lablet instance lifecycle: pure data. docs/lifecycle.md explains every edge.

Performed only by apps.lablets.services.instances.lablet_instance_transition.
"""

from apps.lablets.models import InstanceStatus as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.TERMINATED}),
    S.SCHEDULED: frozenset({S.INSTANTIATING, S.PENDING, S.TERMINATED}),  # PENDING: re-placement
    # STOPPING: ended before it ran. PENDING (and RUNNING → PENDING): re-placement of a lab lost (its worker
    # or its CML lab gone) before the slot began (apps.fleet.reconcile).
    S.INSTANTIATING: frozenset({S.RUNNING, S.STOPPING, S.TERMINATED, S.PENDING}),
    S.RUNNING: frozenset({S.COLLECTING, S.STOPPING, S.TERMINATED, S.PENDING}),
    S.COLLECTING: frozenset({S.GRADING, S.STOPPING, S.TERMINATED}),
    S.GRADING: frozenset({S.STOPPING, S.TERMINATED}),
    S.STOPPING: frozenset({S.STOPPED, S.TERMINATED}),
    S.STOPPED: frozenset({S.ARCHIVED, S.TERMINATED}),
    S.ARCHIVED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

# States in which an instance holds (or will hold) capacity on a worker.
LIVE = frozenset({S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.RUNNING, S.COLLECTING, S.GRADING, S.STOPPING})
# States whose timeslot may still be extended.
EXTENDABLE = frozenset({S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.RUNNING, S.COLLECTING, S.GRADING})
TERMINAL = frozenset({S.TERMINATED})
# States in which a CML lab may exist and the engine owns the next step (docs/lifecycle.md, the engine).
TEARDOWN = frozenset({S.STOPPING, S.STOPPED, S.ARCHIVED})
# States in which the lab is up on CML and its console ports lead to the devices (browser consoles).
CONSOLE_OPEN = frozenset({S.RUNNING, S.COLLECTING, S.GRADING})
# States that end with the teardown path when the instance is terminated or its slot ends.
WITH_LAB = frozenset({S.INSTANTIATING, S.RUNNING, S.COLLECTING, S.GRADING})

# How `termination_reason` starts when the instance failed (a step gave up, the topology policy refused):
# it then ended in TERMINATED like any other, and is counted as failed (scheduler_status).
FAILED_REASON = "failed:"
# How it starts when its lab was lost behind LabManager's back (its worker terminated outside LabManager, its
# CML lab deleted) after the slot began: found by the fleet's reconciliation (apps.fleet.reconcile).
LOST_REASON = "lost:"
# States in which a lost lab is given back to the scheduler when the slot has not begun (re-placement).
REPLACEABLE = frozenset({S.INSTANTIATING, S.RUNNING})

# The timestamp field stamped when a state is reached.
STAMP_FIELD = {state: f"{state}_at" for state in S.values if state != S.PENDING}
