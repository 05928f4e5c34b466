"""Two q clusters ticking at the same moment: every step runs once, every lab exists once (PostgreSQL)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections

from apps.audit.models import AuditEvent
from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletInstance
from tests.lablets.engine_support import labs, labs_titled, running_worker, scheduled, two_router_definition

pytestmark = pytest.mark.django_db(transaction=True)


def tick_together(count: int, **kwargs) -> list:
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(lifecycle_tick(**kwargs))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def count_events(instance, event_type):
    return AuditEvent.objects.filter(resource_id=instance.public_id, event_type=event_type).count()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent writers: PostgreSQL only")
def test_concurrent_ticks_bring_each_lab_up_once_and_tear_it_down_once(cml):
    definition = two_router_definition(idle_timeout_minutes=240)
    workers = [running_worker(), running_worker()]
    instances = [scheduled(workers[i % 2], definition) for i in range(6)]

    tick_together(3)

    for instance in instances:
        instance.refresh_from_db()
        assert instance.status == "running"
        assert labs_titled(cml, instance.public_id) == [instance.cml_lab_id]
        assert count_events(instance, "lablet_instance.instantiating") == 1
        assert count_events(instance, "lablet_instance.lab_imported") == 1
    assert len(labs(cml)) == 6
    ports = [(i.worker_id, c["port"]) for i in LabletInstance.objects.all() for c in i.console]
    assert len(ports) == len(set(ports)) == 12

    tick_together(3, now=instances[0].timeslot_end + timedelta(seconds=1))

    assert labs(cml) == {}
    for instance in instances:
        instance.refresh_from_db()
        assert instance.status == "terminated"
        for event in ("stopping", "stopped", "archived", "terminated", "lab_deleted"):
            assert count_events(instance, f"lablet_instance.{event}") == 1, event
