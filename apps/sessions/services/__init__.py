"""Every write of the remote-lab sessions app: the queue (queue.py), the shared labs (labs.py), uploads
(storage.py), pool membership (pools.py); status is written only in transitions.py."""

from apps.sessions.services.labs import (
    AcquiredLab,
    PendingAcquire,
    lab_teardown_run,
    labs_drop_owned,
    labs_recover,
    session_lab_acquire_begin,
    session_lab_acquire_finish,
    session_lab_acquire_give_up,
    session_lab_destroy,
    session_lab_destroy_by_operator,
    session_lab_release,
)
from apps.sessions.services.pools import worker_session_pool_set
from apps.sessions.services.queue import (
    pool_get_or_create,
    pool_maintain_if_due,
    session_create,
    session_end,
    sessions_end_of_deleted_user,
    session_heartbeat,
    session_touch,
    sessions_purge,
    sessions_reap,
)

__all__ = [
    "AcquiredLab",
    "PendingAcquire",
    "lab_teardown_run",
    "labs_drop_owned",
    "labs_recover",
    "pool_get_or_create",
    "pool_maintain_if_due",
    "session_create",
    "session_end",
    "session_heartbeat",
    "session_lab_acquire_begin",
    "session_lab_acquire_finish",
    "session_lab_acquire_give_up",
    "session_lab_destroy",
    "session_lab_destroy_by_operator",
    "session_lab_release",
    "session_touch",
    "sessions_end_of_deleted_user",
    "sessions_purge",
    "sessions_reap",
    "worker_session_pool_set",
]
