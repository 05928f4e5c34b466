from django.apps import AppConfig


class LabSessionsConfig(AppConfig):
    """The remote-lab session queue. Its own label: django.contrib.sessions owns `sessions`."""

    name = "apps.sessions"
    label = "lab_sessions"
    verbose_name = "Lab sessions"

