from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"
    verbose_name = "CloudEvents webhooks"

    def ready(self):
        from apps.audit.publish import events_sealed
        from apps.webhooks.services import webhooks_dispatch_events

        # Every seal's events, to the subscriptions (never raises).
        events_sealed.connect(lambda sender, events, **kwargs: webhooks_dispatch_events(events),
                              weak=False, dispatch_uid="webhooks_dispatch_events")
