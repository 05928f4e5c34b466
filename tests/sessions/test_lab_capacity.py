"""Session labs hold capacity in the capacity ledger (apps.workers.ledger, docs/workers.md#the-capacity-ledger):
from STARTING until EMPTY, by their topology's need; lablet placement skips what they hold, and a lab that does
not fit beside the worker's lablet bookings is refused (409 insufficient_capacity). On PostgreSQL, concurrent
lab starts and lablet placements never commit a worker beyond its capacity in any dimension."""

import threading
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone

from apps.lablets.models import InstanceStatus
from apps.lablets.services import lablet_instance_create
from apps.sessions.models import LabStatus, SessionLab
from apps.sessions.selectors import Principal
from apps.sessions.services.labs import PendingAcquire, session_lab_acquire_begin, session_lab_acquire_give_up
from apps.core.errors import Conflict
from apps.dashboard.selectors import worker_cards
from apps.workers import ledger
from apps.workers.services.cml import worker_load
from apps.workers.services.fleet import worker_terminate
from tests.factories import LabletDefinitionFactory, placeable_worker
from tests.sessions.conftest import TOPOLOGY, acquire, assert_problem, create, lab_call

# two-routers.yaml: two iosv nodes, 1 CPU and 512 MB each: 2 cores, 1 GB (rounded up), no disk, 2 nodes.
LAB_NEED = {"cpu_cores": 2, "memory_gb": 1, "storage_gb": 0, "node_count": 2}


def _slot(worker) -> SessionLab:
    return SessionLab.objects.get(worker=worker)


def _held(worker) -> dict:
    slot = _slot(worker)
    return {name: getattr(slot, name) for name in LAB_NEED}


@pytest.mark.django_db
def test_a_session_lab_holds_its_topologys_need_until_it_goes_empty(anon, worker, cml):
    session_id = create(anon)["session_id"]
    assert acquire(anon, session_id).status_code == 200
    slot = _slot(worker)
    assert slot.status == LabStatus.RUNNING and _held(worker) == LAB_NEED and slot.held_since is not None
    usage = ledger.usage_at([worker.pk], timezone.now())[worker.pk]
    assert usage["session_lab"] == 1 and usage["total"][:4] == (2, 1, 0, 2)

    assert lab_call(anon, "delete", "/lab", session_id).status_code == 202
    slot.refresh_from_db()
    assert slot.status == LabStatus.EMPTY and _held(worker) == dict.fromkeys(LAB_NEED, 0) and slot.held_since is None
    assert ledger.usage_at([worker.pk], timezone.now()) == {}


@pytest.mark.django_db
def test_a_session_lab_on_a_worker_makes_placement_skip_it(anon, cml):
    # Two workers of 3 cores; the pool's one runs a 2-core session lab: a 2-core lablet goes to the other.
    busy = placeable_worker(session_pool="default", cpu_cores=3)
    other = placeable_worker(cpu_cores=3)
    session_id = create(anon)["session_id"]
    assert acquire(anon, session_id).status_code == 200
    definition = LabletDefinitionFactory(cpu_cores=2, memory_gb=1, storage_gb=1, node_count=1)
    start = timezone.now() + timedelta(hours=1)
    instance = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="s1",
                                      timeslot_start=start)
    assert instance.status == InstanceStatus.SCHEDULED and instance.worker_id == other.pk
    # The second one has nowhere to go: the session lab's worker stays skipped.
    second = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="s2",
                                    timeslot_start=start)
    assert second.status == InstanceStatus.PENDING and second.worker_id is None
    assert _slot(busy).status == LabStatus.RUNNING


@pytest.mark.django_db
def test_a_lablet_booking_makes_a_too_big_session_lab_refused(anon, cml):
    # A 3-core worker with a 2-core lablet booked tomorrow: a 2-core lab from now on (open-ended) cannot fit.
    worker = placeable_worker(session_pool="default", cpu_cores=3)
    definition = LabletDefinitionFactory(cpu_cores=2, memory_gb=1, storage_gb=1, node_count=1)
    booked = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="s1",
                                    timeslot_start=timezone.now() + timedelta(days=1))
    assert booked.worker_id == worker.pk
    session_id = create(anon)["session_id"]
    body = assert_problem(acquire(anon, session_id), 409)
    assert body["code"] == "insufficient_capacity" and body["dimension"] == "cpu_cores"
    assert (body["needs"], body["capacity"]) == (2, 3) and "free" not in body  # others' usage is not told
    assert "CPU cores" in body["detail"]
    assert not SessionLab.objects.filter(worker=worker).exclude(status=LabStatus.EMPTY).exists()
    assert cml.calls["POST import"] == 0  # nothing reached CML


@pytest.mark.django_db
def test_a_session_lab_is_in_the_workers_bars_and_load_and_refuses_its_termination(anon, worker, cml):
    session_id = create(anon)["session_id"]
    assert acquire(anon, session_id).status_code == 200

    [card] = [w for w in worker_cards() if w.pk == worker.pk]
    assert (card.held_cpu, card.held_memory, card.held_nodes, card.held_session_labs, card.live_instances) == (2, 1, 2, 1, 0)
    load = worker_load(worker)
    assert (load["held_cpu"], load["held_memory"], load["held_nodes"]) == (2, 1, 2)
    with pytest.raises(Conflict, match="1 session lab"):
        worker_terminate(worker=worker, actor="tests")


@pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="needs concurrent writers: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_concurrent_session_labs_and_lablet_placements_never_overcommit_a_worker(anon, cml):
    # Six pool workers of 4 cores, each with an active session. A lab needs 2 cores (open-ended), a lablet 3
    # (a slot in an hour): any two of them exceed a worker. Six lablet creations and six lab starts race; the
    # labs set off once two lablets are placed, so some land on workers a lablet holds and some race for them.
    workers = [placeable_worker(session_pool="default", cpu_cores=4) for _ in range(6)]
    sessions = [create(anon)["session_id"] for _ in workers]
    definition = LabletDefinitionFactory(cpu_cores=3, memory_gb=1, storage_gb=1, node_count=1)
    start = timezone.now() + timedelta(hours=1)
    principal = Principal(user_id=None, actor="anonymous@127.0.0.1")
    lablets_placed = threading.Semaphore(0)
    outcomes, errors, pendings = [], [], []

    def lab(session_id):
        try:
            lablets_placed.acquire(timeout=30)
            result = session_lab_acquire_begin(
                session_id=session_id, principal=principal, extra_files=[],
                topology=SimpleUploadedFile("two-routers.yaml", TOPOLOGY, content_type="application/yaml"))
            outcomes.append(("lab", result.decision.kind))
            pendings.append(result)
        except Exception as exc:  # noqa: BLE001 - a refusal is an outcome
            outcomes.append(("lab", getattr(exc, "code", repr(exc))))
        finally:
            connection.close()

    def lablet(n):
        try:
            instance = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id=f"s{n}",
                                              timeslot_start=start)
            outcomes.append(("lablet", instance.status))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        finally:
            connection.close()
            if n < 2:
                lablets_placed.release(3)  # two lablets out of the way let the six labs go

    threads = [threading.Thread(target=lablet, args=(n,)) for n in range(6)]
    threads += [threading.Thread(target=lab, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors
    assert len(outcomes) == 12, outcomes

    # No worker is committed beyond its capacity in any dimension, at any moment; each holds exactly one thing.
    now = timezone.now()
    for worker in workers:
        rows = ledger.bookings([worker.pk], now, ledger.OPEN_END)
        peak = ledger.peak_of(rows, now, ledger.OPEN_END)
        assert all(p <= c for p, c in zip(peak, ledger.capacity_of(worker))), (worker.public_id, peak)
        assert len(rows) == 1, rows
    started = outcomes.count(("lab", "start"))
    refused = outcomes.count(("lab", "insufficient_capacity"))
    scheduled = outcomes.count(("lablet", InstanceStatus.SCHEDULED))
    assert started + refused == 6 and started + scheduled == 6 and scheduled >= 2, outcomes
    for pending in pendings:
        session_lab_acquire_give_up(pending=pending)
