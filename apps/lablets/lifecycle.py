"""The lablet instance lifecycle: pure data. docs/lifecycle.md explains every edge.

Performed only by apps.lablets.services.instances.lablet_instance_transition.
"""

from apps.lablets.models import InstanceStatus as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.TERMINATED}),
    S.SCHEDULED: frozenset({S.INSTANTIATING, S.TERMINATED}),
    S.INSTANTIATING: frozenset({S.RUNNING, S.TERMINATED}),
    S.RUNNING: frozenset({S.COLLECTING, S.STOPPING, S.TERMINATED}),
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

# The timestamp field stamped when a state is reached.
STAMP_FIELD = {state: f"{state}_at" for state in S.values if state != S.PENDING}
