from django.apps import AppConfig


class LabletsConfig(AppConfig):
    name = "apps.lablets"
    label = "lablets"
