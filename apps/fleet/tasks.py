"""django-q2 entry points of the elastic fleet (schedules in settings.Q_SCHEDULES)."""

import logging

from apps.fleet import power
from apps.fleet.reconcile import fleet_reconcile

log = logging.getLogger(__name__)


def worker_cost_tick() -> dict:
    """The `worker_cost` schedule: start stopped workers for booked slots and waiting session pools, stop idle
    ones (apps.fleet.power)."""
    summary = power.worker_cost_tick()
    if summary["started"] or summary["stopped"]:
        log.info("worker_cost: %s", summary)
    return summary


def reconcile() -> dict:
    """The `fleet_reconcile` schedule (every minute): lost instances and orphan labs, against EC2 and CML."""
    return fleet_reconcile()


def fleet_plan_tick() -> dict:
    """The `fleet_plan` schedule (every minute): the planner's pass (apps.fleet.services.fleet_plan_run).
    Never raises: a failed pass is logged and the next minute's tries again."""
    from apps.fleet.services import fleet_plan_run

    try:
        return fleet_plan_run()
    except Exception:
        log.exception("fleet: the planner's pass failed")
        return {"error": True}
