"""django-q2 entry points of the webhooks: take ids, call services."""

from apps.webhooks.delivery import webhook_delivery_attempt
from apps.webhooks.services import webhooks_catch_up as _catch_up


def webhook_deliver(delivery_id: int) -> str:
    return webhook_delivery_attempt(delivery_id=delivery_id)


def webhooks_catch_up() -> dict:
    return _catch_up()
