"""django-q2 entry points of the lifecycle engine (schedules in settings.Q_SCHEDULES)."""

from apps.lablets import engine
from apps.lablets.services.awaited import lablet_definition_sync_for_task, lablet_instance_collect_for_task


def lifecycle_tick() -> dict:
    """Every minute: expiries, slot ends, warnings, instantiations, teardowns, cleanups."""
    return engine.lifecycle_tick()


def advance_instance(instance_pk: int) -> str:
    """Whatever step is due for one instance now."""
    return engine.instance_advance(instance_pk=instance_pk)


def terminate_instance(instance_pk: int, actor: str) -> list[str]:
    """The teardown a terminate request started (awaited by the request: apps.lablets.services.awaited)."""
    return engine.instance_teardown_now(instance_pk=instance_pk, actor=actor)


def collect_instance(instance_pk: int, actor: str) -> dict:
    """The collection a start-collection request started: {} or the refusal its request answers with."""
    return lablet_instance_collect_for_task(instance_pk=instance_pk, actor=actor)


def sync_definition(definition_pk: int, actor: str, lab_id: str = "", worker_id: str = "",
                    may_trust: bool = False) -> dict:
    """The topology pull a definition's sync request started: {} or the refusal its request answers with."""
    return lablet_definition_sync_for_task(definition_pk=definition_pk, actor=actor, lab_id=lab_id,
                                           worker_id=worker_id, may_trust=may_trust)
