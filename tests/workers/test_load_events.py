"""The CML health poll journals `worker.load_changed` (the fleet's live bars) when a worker's load moved, not
at every reading. Over HTTP to the CML simulator."""

from datetime import timedelta

import pytest

from apps.audit.models import AuditEvent
from apps.lablets.services import lablet_instance_terminate
from apps.workers.models import Worker
from apps.workers.services import cml as cml_services
from apps.workers.services.cml import worker_cml_health
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(cml):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id=""), to="running", actor="tests")
    yield worker
    cml.configure(cpu_percent=None)


def poll(worker, cml, *, cpu: float) -> list[dict]:
    """One health poll with CML reporting `cpu` percent; the load events journalled by it."""
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    cml.configure(cpu_percent=cpu)
    worker_cml_health(worker=Worker.objects.get(pk=worker.pk))
    return [event.metadata for event in AuditEvent.objects.filter(event_type="worker.load_changed", id__gt=last)
            .order_by("id")]


def test_the_first_poll_journals_the_load_with_every_figure_the_bars_show(worker, cml):
    instance_in("running", worker=worker, definition=LabletDefinitionFactory(cpu_cores=12, memory_gb=48,
                                                                              node_count=25))
    [load] = poll(worker, cml, cpu=37.4)

    assert load == {
        "held_cpu": 12, "cpu_cores": 48, "cpu_held_percent": 25,
        "held_memory": 48, "memory_gb": 192, "memory_held_percent": 25,
        "held_nodes": 25, "max_nodes": 100, "nodes_held_percent": 25,
        "cpu_usage_percent": 37, "memory_usage_percent": load["memory_usage_percent"],
        "nodes_running": load["nodes_running"],
    }
    assert isinstance(load["memory_usage_percent"], int)
    event = AuditEvent.objects.get(event_type="worker.load_changed")
    assert (event.resource_type, event.resource_id) == ("worker", worker.public_id)  # SSE worker_status


def test_a_steady_reading_journals_nothing_and_a_move_of_five_points_does(worker, cml):
    assert len(poll(worker, cml, cpu=40)) == 1
    assert poll(worker, cml, cpu=40) == []
    assert poll(worker, cml, cpu=43) == []  # under 5 points from the last event
    assert poll(worker, cml, cpu=44.4) == []  # 44: still under
    assert [load["cpu_usage_percent"] for load in poll(worker, cml, cpu=45)] == [45]
    assert poll(worker, cml, cpu=41) == []  # compared with the last event (45), not the last reading (44)


def test_resources_held_or_freed_by_instances_are_a_change(worker, cml):
    poll(worker, cml, cpu=10)
    instance = instance_in("scheduled", worker=worker, definition=LabletDefinitionFactory(cpu_cores=4))

    [held] = poll(worker, cml, cpu=10)
    lablet_instance_terminate(instance=instance, actor="tests")
    [freed] = poll(worker, cml, cpu=10)

    assert (held["held_cpu"], freed["held_cpu"]) == (4, 0)


def test_a_steady_worker_journals_its_figures_again_once_the_last_event_is_out_of_the_window(worker, cml,
                                                                                            monkeypatch):
    poll(worker, cml, cpu=30)
    assert poll(worker, cml, cpu=30) == []
    monkeypatch.setattr(cml_services, "LOAD_EVENT_WINDOW", timedelta(0))  # as if the last one were a day old

    assert [load["cpu_usage_percent"] for load in poll(worker, cml, cpu=30)] == [30]
