"""Every (source, target) pair of the instance and worker lifecycles, allowed and refused.

The allowed set is read from the transition tables; `test_it_has_the_edges_the_seed_demands`
pins those tables to the contract so a missing edge cannot hide behind the table-driven tests.
"""

import itertools

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.lifecycle import TRANSITIONS as INSTANCE_TRANSITIONS
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.lifecycle import TRANSITIONS as WORKER_TRANSITIONS
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services import worker_transition
from apps.core.errors import InvalidTransition
from tests.factories import WorkerFactory, instance_in

S = InstanceStatus
W = WorkerStatus

INSTANCE_PAIRS = list(itertools.product(S.values, S.values))
WORKER_PAIRS = list(itertools.product(W.values, W.values))

# The seed's main line, in order.
MAIN_LINE = [S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.RUNNING, S.COLLECTING, S.GRADING,
             S.STOPPING, S.STOPPED, S.ARCHIVED, S.TERMINATED]


def _pair_id(pair):
    return f"{pair[0]}->{pair[1]}"


def _audit_for(resource_id):
    return list(AuditEvent.objects.filter(resource_id=resource_id).order_by("id"))


# --- the table itself ---------------------------------------------------------------------------


def test_it_has_the_edges_the_seed_demands():
    assert set(INSTANCE_TRANSITIONS) == set(S.values)
    for source, target in zip(MAIN_LINE, MAIN_LINE[1:]):
        assert target in INSTANCE_TRANSITIONS[source], f"missing main-line edge {source} -> {target}"
    for source in (S.RUNNING, S.COLLECTING, S.GRADING):
        assert S.STOPPING in INSTANCE_TRANSITIONS[source], f"missing early-stop edge {source} -> stopping"
    for source in S.values:
        if source != S.TERMINATED:
            assert S.TERMINATED in INSTANCE_TRANSITIONS[source], f"missing {source} -> terminated"
    assert INSTANCE_TRANSITIONS[S.TERMINATED] == frozenset()


# The edges that go back on purpose: re-placement when a worker can no longer host a scheduled instance, or
# when the lab of an instance whose slot has not begun was lost (its worker or CML lab gone: apps.fleet).
BACKWARD_EDGES = {(S.SCHEDULED, S.PENDING), (S.INSTANTIATING, S.PENDING), (S.RUNNING, S.PENDING)}


def test_it_never_moves_an_instance_backwards_or_in_place_except_for_re_placement():
    order = {state: index for index, state in enumerate(MAIN_LINE)}
    for source, targets in INSTANCE_TRANSITIONS.items():
        for target in targets:
            if (source, target) in BACKWARD_EDGES:
                continue
            assert order[target] > order[source], f"{source} -> {target} goes backwards"


def test_it_knows_every_worker_status_and_keeps_terminated_final():
    assert set(WORKER_TRANSITIONS) == set(W.values)
    assert WORKER_TRANSITIONS[W.TERMINATED] == frozenset()
    for source in W.values:
        assert source not in WORKER_TRANSITIONS[source]
        if source != W.TERMINATED:
            assert W.TERMINATED in WORKER_TRANSITIONS[source]


# --- lablet instances -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("source,target", INSTANCE_PAIRS, ids=[_pair_id(p) for p in INSTANCE_PAIRS])
def test_it_performs_allowed_instance_transitions_and_refuses_the_rest(source, target):
    instance = instance_in(source)
    assert instance.status == source
    audit_before = _audit_for(instance.public_id)
    stamp = f"{target}_at"

    if target in INSTANCE_TRANSITIONS[source]:
        if target != S.PENDING:  # pending (re-placement) has no stamp
            assert getattr(instance, stamp) is None
        started = timezone.now()
        result = lablet_instance_transition(instance=instance, to=target, actor="lifecycle-test", reason="pair")
        finished = timezone.now()

        stored = LabletInstance.objects.get(pk=instance.pk)
        assert result.status == stored.status == target
        if target != S.PENDING:
            assert started <= getattr(stored, stamp) <= finished
        else:
            assert started <= stored.updated_at <= finished
        new_events = _audit_for(instance.public_id)[len(audit_before):]
        assert len(new_events) == 1
        event = new_events[0]
        assert event.action == "lablet_instance.transition"
        assert event.event_type == f"lablet_instance.{target}"
        assert event.actor == "lifecycle-test"
        assert event.metadata["from"] == source
        assert event.metadata["to"] == target
        assert event.metadata["reason"] == "pair"
    else:
        with pytest.raises(InvalidTransition) as excinfo:
            lablet_instance_transition(instance=instance, to=target, actor="lifecycle-test")
        assert (excinfo.value.source, excinfo.value.target) == (source, target)
        stored = LabletInstance.objects.get(pk=instance.pk)
        assert stored.status == source
        if target != S.PENDING:  # pending has no stamp
            assert getattr(stored, stamp) == getattr(instance, stamp)
        assert stored.updated_at == instance.updated_at
        assert _audit_for(instance.public_id) == audit_before


# --- workers --------------------------------------------------------------------------------------


def worker_in(state: str) -> Worker:
    """A worker in `state`, reached from pending through an allowed edge (pending reaches all)."""
    worker = WorkerFactory()
    assert worker.status == W.PENDING
    if state != W.PENDING:
        worker = worker_transition(worker=worker, to=state, actor="tests")
    return worker


@pytest.mark.django_db
@pytest.mark.parametrize("source,target", WORKER_PAIRS, ids=[_pair_id(p) for p in WORKER_PAIRS])
def test_it_performs_allowed_worker_transitions_and_refuses_the_rest(source, target):
    worker = worker_in(source)
    assert worker.status == source
    audit_before = _audit_for(worker.public_id)
    stamped_before = Worker.objects.get(pk=worker.pk).status_changed_at

    if target in WORKER_TRANSITIONS[source]:
        started = timezone.now()
        result = worker_transition(worker=worker, to=target, actor="lifecycle-test", reason="pair")
        finished = timezone.now()

        stored = Worker.objects.get(pk=worker.pk)
        assert result.status == stored.status == target
        assert started <= stored.status_changed_at <= finished
        new_events = _audit_for(worker.public_id)[len(audit_before):]
        assert len(new_events) == 1
        event = new_events[0]
        assert event.action == "worker.transition"
        assert event.event_type == f"worker.{target}"
        assert event.metadata["from"] == source
        assert event.metadata["to"] == target
    else:
        with pytest.raises(InvalidTransition) as excinfo:
            worker_transition(worker=worker, to=target, actor="lifecycle-test")
        assert (excinfo.value.source, excinfo.value.target) == (source, target)
        stored = Worker.objects.get(pk=worker.pk)
        assert stored.status == source
        assert stored.status_changed_at == stamped_before
        assert _audit_for(worker.public_id) == audit_before


def test_the_instance_table_is_exactly_the_documented_one():
    # docs/lifecycle.md lists these edges; a new edge (say pending → running) must be added on purpose.
    from apps.lablets.lifecycle import TRANSITIONS

    documented = {
        "pending": {"scheduled", "terminated"},
        "scheduled": {"instantiating", "pending", "terminated"},
        "instantiating": {"running", "stopping", "terminated", "pending"},
        "running": {"collecting", "stopping", "terminated", "pending"},
        "collecting": {"grading", "stopping", "terminated"},
        "grading": {"stopping", "terminated"},
        "stopping": {"stopped", "terminated"},
        "stopped": {"archived", "terminated"},
        "archived": {"terminated"},
        "terminated": set(),
    }
    assert {str(k): {str(t) for t in v} for k, v in TRANSITIONS.items()} == documented
