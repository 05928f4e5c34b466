from django.apps import AppConfig


class LabSessionsConfig(AppConfig):
    """The remote-lab session queue. Its own label: django.contrib.sessions owns `sessions`."""

    name = "apps.sessions"
    label = "lab_sessions"
    verbose_name = "Lab sessions"


    def ready(self):
        from apps.sessions import signals  # noqa: F401  (receivers: a deleted user's sessions end)
