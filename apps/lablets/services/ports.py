"""Console ports: each running lab gets one port per port definition, unique per worker, from
CONSOLE_PORT_MIN..CONSOLE_PORT_MAX, held from instantiation until the lab is stopped or the instance ends.
Workers whose consoles are reached at one named host (Worker.console_host / settings.CONSOLE_HOST) share
one port space: a port is unique across them.

Concurrency: the worker's row (and those of the workers sharing its console host, in pk order) is locked
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite serialises writers) while the free ports are read and taken,
and the unique (worker, port) constraint is the last guard within a worker.
"""

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from apps.lablets.models import ConsolePort, LabletInstance
from apps.workers.models import Worker
from apps.core.errors import Conflict


def _held(instance: LabletInstance) -> list[dict]:
    return [{"name": name, "port": port}
            for name, port in ConsolePort.objects.filter(instance=instance).order_by("port").values_list("name", "port")]


def _workers_sharing_console_host(worker: Worker) -> list[int]:
    """The workers whose console ports are reached at the same named host as `worker`'s (Worker.console_host, or
    settings.CONSOLE_HOST for those naming none): one port space, e.g. every worker of `make run` and the tests on
    the one CML simulator. A worker reached at its own address shares with no one."""
    host = worker.console_host or settings.CONSOLE_HOST
    if not host:
        return [worker.pk]
    same = Q(console_host=host)
    if host == settings.CONSOLE_HOST:
        same |= Q(console_host="")
    return sorted({worker.pk, *Worker.objects.filter(same).values_list("pk", flat=True)})


@transaction.atomic
def console_ports_allocate(*, instance: LabletInstance) -> list[dict]:
    """The instance's console ports as [{name, port}], one per port definition, lowest free first.

    Idempotent: an instance that already holds its ports gets them back. Conflict when the worker's
    range has too few free ports.
    """
    definitions = list(instance.definition.port_definitions or [])
    if not definitions:
        return []
    if instance.worker_id is None:
        raise Conflict(f"Lablet instance {instance.public_id} has no worker to allocate console ports on.")
    sharing = _workers_sharing_console_host(instance.worker)
    list(Worker.objects.select_for_update().filter(pk__in=sharing).order_by("pk").values_list("pk", flat=True))
    held = _held(instance)
    if held:
        return held
    used = set(ConsolePort.objects.filter(worker_id__in=sharing).values_list("port", flat=True))
    free = []
    for port in range(settings.CONSOLE_PORT_MIN, settings.CONSOLE_PORT_MAX + 1):
        if port not in used:
            free.append(port)
            if len(free) == len(definitions):
                break
    if len(free) < len(definitions):
        raise Conflict(
            f"Worker {instance.worker.public_id} has {len(free)} free console port(s) in "
            f"{settings.CONSOLE_PORT_MIN}-{settings.CONSOLE_PORT_MAX}; lablet instance {instance.public_id} "
            f"needs {len(definitions)}.",
            extra={"reason": "ports"},
        )
    ConsolePort.objects.bulk_create([
        ConsolePort(worker_id=instance.worker_id, port=port, instance=instance, name=str(spec.get("name", "")))
        for port, spec in zip(free, definitions)
    ])
    return _held(instance)


def console_ports_release(*, instance: LabletInstance) -> int:
    """Give the instance's console ports back; returns how many it held."""
    deleted, _ = ConsolePort.objects.filter(instance_id=instance.pk).delete()
    return deleted
