from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit journal"

    def ready(self):
        from apps.api.problems import request_refused
        from apps.audit import checks  # noqa: F401  (registers the deployment check of the chain key)
        from apps.audit.api.refusals import journal_refusal

        # Every refusal of a DRF view: the refused changes are journalled (never raises).
        request_refused.connect(lambda sender, request, exc, response, **kwargs: journal_refusal(request, exc, response),
                                weak=False, dispatch_uid="journal_refusal")
