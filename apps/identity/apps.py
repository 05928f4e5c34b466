from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "apps.identity"
    label = "identity"
    verbose_name = "Identity"

    def ready(self):
        from apps.identity import checks  # noqa: F401  (registers the deployment check of the provider sync)
