"""No double booking under concurrent clients: 100 creations race for 10 slots of capacity.

PostgreSQL only (SQLite serialises every writer, so it cannot show a race). Each client thread has
its own database connection and goes through the API (authentication, idempotency, the create
service, placement with worker row locks); scheduler passes run alongside them in other threads.
"""

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from apps.lablets.lifecycle import LIVE
from apps.lablets.models import LabletInstance
from apps.lablets.services.scheduling import lablet_instances_schedule_pending
from tests.conftest import client_for
from tests.factories import LabletDefinitionFactory, placeable_worker

pytestmark = [
    pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="needs concurrent writers: PostgreSQL only"),
    pytest.mark.django_db(transaction=True),
]

CREATIONS = 100
CLIENTS = 50  # concurrent connections (PostgreSQL's default max_connections is 100)
SCHEDULER_PASSES = 3


def _peak_per_worker(worker):
    """The highest CPU booked on `worker` at any moment, from what is in the database."""
    rows = list(LabletInstance.objects.filter(worker=worker, status__in=LIVE)
                .values_list("timeslot_start", "timeslot_end", "cpu_cores"))
    return max((sum(cpu for s, e, cpu in rows if s <= moment < e) for moment, _, _ in rows), default=0)


def test_100_concurrent_creations_fill_exactly_10_slots_and_overbook_nothing(instructor_user, ec2, cml):
    # Two workers with room for 5 instances each (20 cores, 4 per instance): 10 slots in all.
    workers = [placeable_worker(cpu_cores=20, memory_gb=1000, storage_gb=10000, max_nodes=1000) for _ in range(2)]
    definition = LabletDefinitionFactory(cpu_cores=4, memory_gb=1, storage_gb=1, node_count=1)
    raw_key = client_for(instructor_user).raw_key
    base = timezone.now() + timedelta(hours=2)
    # Two overlapping slots: every slot-A instance overlaps every slot-B one, so 10 is the most that fit.
    slots = [(base, base + timedelta(hours=2)), (base + timedelta(hours=1), base + timedelta(hours=3))]
    bodies = [
        {"definition_id": definition.public_id, "owner_id": f"student-{n:03d}",
         "timeslot_start": slots[n % 2][0].isoformat(), "timeslot_end": slots[n % 2][1].isoformat()}
        for n in range(CREATIONS)
    ]
    queue = list(enumerate(bodies))
    lock = threading.Lock()
    results = [None] * CREATIONS
    barrier = threading.Barrier(CLIENTS + 1)

    def client_thread():
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=raw_key)
        try:
            barrier.wait(timeout=30)
            while True:
                with lock:
                    if not queue:
                        return
                    index, body = queue.pop()
                response = client.post("/api/lablet-instances", body, format="json")
                results[index] = (response.status_code, response.json())
        finally:
            connection.close()

    def scheduler_thread():
        try:
            barrier.wait(timeout=30)
            for _ in range(SCHEDULER_PASSES):
                lablet_instances_schedule_pending(actor="test-scheduler")
        finally:
            connection.close()

    threads = [threading.Thread(target=client_thread) for _ in range(CLIENTS)]
    threads.append(threading.Thread(target=scheduler_thread))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a client hung"

    assert [status for status, _ in results] == [201] * CREATIONS, [r for r in results if r[0] != 201][:3]
    statuses = sorted(payload["status"] for _, payload in results)
    stored = LabletInstance.objects.filter(definition=definition)
    assert stored.count() == CREATIONS
    assert stored.filter(status="scheduled").count() == 10
    assert stored.filter(status="pending").count() == 90
    assert stored.filter(status="pending", worker__isnull=False).count() == 0
    # What the API answered agrees with the database (a client told "scheduled" really got a slot).
    assert statuses.count("scheduled") <= 10
    for worker in workers:
        assert _peak_per_worker(worker) <= worker.cpu_cores


def test_a_second_scheduler_pass_finds_nothing_left_to_double_book(instructor_user, ec2, cml):
    # Many PENDING reservations, then several scheduler passes at once: each instance is placed once.
    worker = placeable_worker(cpu_cores=40, memory_gb=1000, storage_gb=10000, max_nodes=1000)
    definition = LabletDefinitionFactory(cpu_cores=4, memory_gb=1, storage_gb=1, node_count=1)
    start = timezone.now() + timedelta(hours=2)
    LabletInstance.objects.bulk_create([
        LabletInstance(definition=definition, owner_id=f"s{n}", timeslot_start=start,
                       timeslot_end=start + timedelta(hours=1), cpu_cores=4, memory_gb=1, storage_gb=1,
                       node_count=1)
        for n in range(30)
    ])
    barrier = threading.Barrier(4)
    outcomes = []

    def scheduler_thread():
        try:
            barrier.wait(timeout=30)
            outcomes.append(lablet_instances_schedule_pending(actor="test-scheduler"))
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(o["placed"] for o in outcomes) == 10
    assert LabletInstance.objects.filter(status="scheduled", worker=worker).count() == 10
    assert _peak_per_worker(worker) == 40
