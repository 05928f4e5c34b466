"""django-q2 entry points of the elastic fleet (schedules in settings.Q_SCHEDULES)."""

import logging

log = logging.getLogger(__name__)


def fleet_plan_tick() -> dict:
    """The `fleet_plan` schedule (every minute): the planner's pass (apps.fleet.services.fleet_plan_run).
    Never raises: a failed pass is logged and the next minute's tries again."""
    from apps.fleet.services import fleet_plan_run

    try:
        return fleet_plan_run()
    except Exception:
        log.exception("fleet: the planner's pass failed")
        return {"error": True}
