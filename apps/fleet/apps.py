from django.apps import AppConfig


class FleetConfig(AppConfig):
    """The elastic fleet: the planner that launches, starts, stops and terminates workers for the demand of
    lablets, sessions and warm pools, and the reconciler that keeps the ledger true to EC2 and CML
    (docs/workers.md#capacity-and-scaling). It sits above apps.lablets and apps.sessions: it reads both."""

    name = "apps.fleet"
    verbose_name = "Fleet"
