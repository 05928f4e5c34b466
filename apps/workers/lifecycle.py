"""Worker status transitions: pure data. Performed only by apps.workers.services.worker_transition."""

from apps.workers.models import WorkerStatus as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.RUNNING, S.STOPPING, S.STOPPED, S.TERMINATED, S.FAILED}),
    S.RUNNING: frozenset({S.STOPPING, S.STOPPED, S.TERMINATED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.RUNNING, S.TERMINATED, S.FAILED}),
    S.STOPPED: frozenset({S.PENDING, S.RUNNING, S.TERMINATED, S.FAILED}),
    S.FAILED: frozenset({S.PENDING, S.RUNNING, S.STOPPED, S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

LIVE = frozenset({S.PENDING, S.RUNNING, S.STOPPING, S.STOPPED, S.FAILED})
TERMINAL = frozenset({S.TERMINATED})

