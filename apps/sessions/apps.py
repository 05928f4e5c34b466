from django.apps import AppConfig


class LabSessionsConfig(AppConfig):
    """The remote-lab session queue. Its own label: django.contrib.sessions owns `sessions`."""

    name = "apps.sessions"
    label = "lab_sessions"
    verbose_name = "Lab sessions"


    def ready(self):
        from apps.sessions import signals  # noqa: F401  (receivers: a deleted user's sessions end)
        from apps.sessions.selectors import session_lab_bookings
        from apps.workers.ledger import worker_bookings

        # The capacity ledger's session-lab rows: labs starting or running, open-ended.
        worker_bookings.connect(
            lambda sender, worker_ids, start, end, exclude, **kwargs: session_lab_bookings(
                worker_ids, start, end, exclude_pk=exclude.get("session_lab")),
            weak=False, dispatch_uid="sessions_bookings")
