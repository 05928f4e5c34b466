"""django-q2 entry points of the session queue (schedules in settings.Q_SCHEDULES)."""

from apps.sessions import services
from apps.sessions.lifecycle import LIVE
from apps.sessions.models import LabClaim
from apps.sessions.services import storage


def reap_sessions() -> dict:
    """Every minute: reap stale sessions and promote (all pools), recover labs, sweep stray upload
    directories, purge old history. Returns the counts (the `reap_sessions` command prints them)."""
    counts = services.sessions_reap()
    counts.update(services.labs_recover())
    keep = {str(pk) for pk in LabClaim.objects.filter(session__status__in=LIVE).values_list("session_id", flat=True)}
    counts["upload_dirs_removed"] = storage.storage_sweep(keep=keep)
    counts["sessions_purged"] = services.sessions_purge()
    return counts


def session_lab_teardown(teardown_id: int) -> bool:
    """Delete one dropped lab on its worker's CML (dispatched after the commit that dropped it)."""
    return services.lab_teardown_run(teardown_id=teardown_id)
