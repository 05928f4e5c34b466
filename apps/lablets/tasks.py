"""django-q2 entry points of the lifecycle engine (schedules in settings.Q_SCHEDULES)."""

from apps.lablets import engine


def lifecycle_tick() -> dict:
    """Every minute: expiries, slot ends, warnings, instantiations, teardowns, cleanups."""
    return engine.lifecycle_tick()


def advance_instance(instance_pk: int) -> str:
    """Whatever step is due for one instance now."""
    return engine.instance_advance(instance_pk=instance_pk)
