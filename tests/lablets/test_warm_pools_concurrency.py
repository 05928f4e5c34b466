"""A warm lab is never handed out twice: concurrent start-now creations race for a pool of depth 3.

PostgreSQL only (SQLite serialises every writer, so it cannot show a race). Each thread has its own database
connection and goes through the create service (owner checks, the warm-lab take with SKIP LOCKED and the worker
lock, the hand-over after the commit over HTTP to the CML simulator)."""

import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from apps.lablets.engine.warm import warm_pool_tick
from apps.lablets.models import LabletInstance, WarmLab
from apps.lablets.services import lablet_instance_create
from apps.workers.ledger import DIMENSIONS, capacity_of, usage_at
from tests.lablets.engine_support import running_worker, two_router_definition

pytestmark = [
    pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="needs concurrent writers: PostgreSQL only"),
    pytest.mark.django_db(transaction=True),
]

DEPTH = 3
CREATIONS = 10


def test_concurrent_start_now_creations_take_each_warm_lab_exactly_once(cml):
    worker = running_worker()
    definition = two_router_definition(warm_pool_depth=DEPTH, idle_timeout_minutes=240)
    deadline = time.monotonic() + 15
    while WarmLab.objects.filter(definition=definition, status="ready").count() < DEPTH:
        assert time.monotonic() < deadline
        warm_pool_tick()
    ready = set(WarmLab.objects.filter(status="ready").values_list("cml_lab_id", flat=True))
    barrier = threading.Barrier(CREATIONS)
    errors = []

    def create(n):
        try:
            barrier.wait(timeout=30)
            lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id=f"student-{n}",
                                   timeslot_start=timezone.now())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(CREATIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a creation hung"
    assert errors == []

    taken = list(WarmLab.objects.filter(definition=definition, status="taken"))
    instances = list(LabletInstance.objects.filter(definition=definition))
    assert len(instances) == CREATIONS
    assert len(taken) == DEPTH and len({w.taken_by_id for w in taken}) == DEPTH
    warm = [i for i in instances if i.pk in {w.taken_by_id for w in taken}]
    assert {i.status for i in warm} == {"running"}
    assert {i.cml_lab_id for i in warm} == ready  # each warm lab's lab went to exactly one instance
    cold = [i for i in instances if i not in warm]
    assert {i.status for i in cold} == {"scheduled"} and not any(i.cml_lab_id for i in cold)
    # The ledger counts each lab once: 10 instances, no warm lab left, within the worker's capacity.
    held = usage_at([worker.pk], timezone.now())[worker.pk]
    assert (held["instance"], held["warm_lab"]) == (CREATIONS, 0)
    assert all(used <= cap for used, cap in zip(held["total"], capacity_of(worker))), dict(zip(DIMENSIONS,
                                                                                                held["total"]))
