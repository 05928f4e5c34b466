"""django-q2 entry points of the fleet (schedules in settings.Q_SCHEDULES)."""

from apps.fleet.reconcile import fleet_reconcile


def reconcile() -> dict:
    """The `fleet_reconcile` schedule (every minute): lost instances and orphan labs, against EC2 and CML."""
    return fleet_reconcile()
