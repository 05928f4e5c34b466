"""Placement: which worker hosts a lablet instance for its whole timeslot (docs/scheduler.md).

Pure capacity arithmetic, no writes. A worker fits when, at every moment of the slot, the sum of the
needs of its live bookings overlapping that moment plus the new need stays within its capacity, in
every dimension. Since the new need is constant over the slot, that is: for each dimension, the peak of
the overlapping bookings inside the slot plus the need is at most the capacity (an interval sweep, not
a count).

What a worker holds comes from the capacity ledger (apps.workers.ledger): lablet instances by slot, session
labs and warm labs (open-ended), so a lablet never lands on capacity a session or a warm lab holds.

`Planner` holds a set of workers and their holdings in memory and answers "where would this go";
`apps.lablets.services.scheduling` uses it for one instance (API create, under a worker row lock) and
for a whole batch (the scheduler pass).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from apps.lablets.lifecycle import LIVE
from apps.lablets.models import LabletInstance
from apps.workers.ledger import (DIMENSION_LABELS, DIMENSIONS, INSTANCE, UNLIMITED,  # noqa: F401 (re-exported)
                                 UTILISATION_DIMENSIONS, Vector, bookings, capacity_of)
from apps.workers.models import Worker, WorkerStatus

BOOKING_COLUMNS = ("worker_id", "timeslot_start", "timeslot_end", "cpu_cores", "memory_gb", "storage_gb",
                   "node_count", "port_count")
BAD_LICENCES = frozenset({"expired", "out_of_compliance"})

# Why a worker takes no placement (the `reason` of a rejection).
FAILED, DRAINING, UNHEALTHY, STOPPED, LICENCE, CAPACITY, PORTS = (
    "failed", "draining", "unhealthy", "stopped", "licence", "capacity", "ports")


def need_of(row) -> Vector:
    """The need of an instance (model or dict row) as a vector over DIMENSIONS."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return (get("cpu_cores"), get("memory_gb"), get("storage_gb"), get("node_count"), get("port_count"), 1)


def definition_need(definition) -> Vector:
    return (definition.cpu_cores, definition.memory_gb, definition.storage_gb, definition.node_count,
            len(definition.port_definitions or []), 1)


def status_rejection(worker: Worker) -> tuple[str, str] | None:
    """(reason, detail) when the worker's state rules it out whatever its bookings, else None."""
    if worker.status == WorkerStatus.FAILED:
        return FAILED, "the worker failed"
    if worker.draining:
        return DRAINING, "the worker is draining"
    if worker.status == WorkerStatus.RUNNING:
        if worker.cml_service_status != "available":
            return UNHEALTHY, f"CML is {worker.cml_service_status}"
    elif not settings.SCHEDULER_USE_STOPPED_WORKERS:
        return STOPPED, f"the worker is {worker.status}"
    elif not worker.aws_instance_id:
        return STOPPED, f"the worker is {worker.status} and has no EC2 instance to start"
    if worker.license_status in BAD_LICENCES:
        return LICENCE, f"the CML licence is {worker.license_status}"
    return None


class Timeline:
    """A worker's booked usage over time: a step function kept as sorted breakpoints.

    `times[i]` is where the usage becomes `levels[i]` (until `times[i + 1]`); before `times[0]` it is zero.
    Slots of one class share their bounds, so a timeline has few breakpoints and both the peak query
    and an insertion touch only the breakpoints inside the slot.
    """

    __slots__ = ("times", "levels")

    def __init__(self):
        self.times: list[datetime] = []
        self.levels: list[list[int]] = []

    def _split(self, moment: datetime) -> int:
        """Make `moment` a breakpoint; return its index."""
        index = bisect.bisect_left(self.times, moment)
        if index < len(self.times) and self.times[index] == moment:
            return index
        level = list(self.levels[index - 1]) if index else [0] * len(DIMENSIONS)
        self.times.insert(index, moment)
        self.levels.insert(index, level)
        return index

    def add(self, start: datetime, end: datetime, need: Vector) -> None:
        first = self._split(start)
        last = self._split(end)
        for index in range(first, last):
            level = self.levels[index]
            for d, amount in enumerate(need):
                level[d] += amount

    def peak(self, start: datetime, end: datetime) -> list[int]:
        """The highest usage in each dimension at any moment of [start, end)."""
        index = bisect.bisect_right(self.times, start) - 1
        best = list(self.levels[index]) if index >= 0 else [0] * len(DIMENSIONS)
        index += 1
        while index < len(self.times) and self.times[index] < end:
            level = self.levels[index]
            for d in range(len(DIMENSIONS)):
                if level[d] > best[d]:
                    best[d] = level[d]
            index += 1
        return best


@dataclass
class Assessment:
    """One worker judged for one need and slot."""

    worker: Worker
    fits: bool
    reason: str = ""  # a rejection reason code, "" when it fits
    detail: str = ""
    peak: list[int] = field(default_factory=list)  # usage at its highest during the slot, before
    capacity: Vector = ()
    tier: int = 0  # 0: running; 1: stopped but startable (used only when no running worker fits)
    score: float = 0.0  # utilisation after placing (the highest of cpu, memory, storage, nodes), 0..1

    def utilisation(self, need: Vector | None = None) -> dict:
        """Per-dimension utilisation in percent at the peak of the slot, before (or after adding `need`)."""
        out = {}
        for d, name in enumerate(DIMENSIONS[:UTILISATION_DIMENSIONS]):
            used = self.peak[d] + (need[d] if need else 0) if self.peak else 0
            cap = self.capacity[d] if self.capacity else 0
            out[name] = round(100.0 * used / cap, 1) if cap else None
        return out


def _score(peak: list[int], need: Vector, capacity: Vector) -> float:
    fractions = [(peak[d] + need[d]) / capacity[d] for d in range(UTILISATION_DIMENSIONS) if capacity[d]]
    return max(fractions) if fractions else 1.0


def assess(worker: Worker, timeline: Timeline, need: Vector, start: datetime, end: datetime) -> Assessment:
    capacity = capacity_of(worker)
    rejected = status_rejection(worker)
    tier = 0 if worker.status == WorkerStatus.RUNNING else 1
    if rejected:
        return Assessment(worker, False, *rejected, capacity=capacity, tier=tier)
    peak = timeline.peak(start, end)
    for d, name in enumerate(DIMENSIONS):
        if peak[d] + need[d] > capacity[d]:
            free = max(0, capacity[d] - peak[d])
            if name == "instances":
                reason, detail = LICENCE, (f"personal licence: at most {capacity[d]} live instance(s), "
                                           f"{peak[d]} booked in the slot")
            else:
                reason = PORTS if name == "port_count" else CAPACITY
                detail = (f"{DIMENSION_LABELS[name]}: needs {need[d]}, {free} free of {capacity[d]} "
                          f"at the busiest moment of the slot")
            return Assessment(worker, False, reason, detail, peak=peak, capacity=capacity, tier=tier)
    return Assessment(worker, True, peak=peak, capacity=capacity, tier=tier,
                      score=_score(peak, need, capacity))


def preference(policy: str):
    """Sort key over fitting assessments: running workers first; then tightest (best fit) or emptiest (spread)."""
    if policy == "spread":
        return lambda a: (a.tier, a.score, a.worker.pk)
    return lambda a: (a.tier, -a.score, a.worker.pk)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What placement reads of a worker (a plain row: building 200 full models costs more than the query)."""

    pk: int
    public_id: str
    name: str
    status: str
    draining: bool
    cml_service_status: str
    license_status: str
    license_tier: str
    aws_instance_id: str
    cpu_cores: int
    memory_gb: int
    storage_gb: int
    max_nodes: int


WORKER_VIEW_COLUMNS = ("pk",) + tuple(WorkerView.__dataclass_fields__)[1:]


def candidate_workers() -> list[WorkerView]:
    """Every worker that could ever take a placement (not terminated), in a stable order."""
    rows = Worker.objects.exclude(status=WorkerStatus.TERMINATED).order_by("pk").values_list(*WORKER_VIEW_COLUMNS)
    return [WorkerView(*row) for row in rows]


def live_bookings(worker_ids, start: datetime, end: datetime, *, exclude_pk=None) -> list[tuple]:
    """Everything the ledger says these workers hold overlapping [start, end) (apps.workers.ledger: live lablet
    instances, session labs, warm labs), leaving out the instance `exclude_pk` (the one being placed again)."""
    return bookings(worker_ids, start, end, exclude={INSTANCE: exclude_pk} if exclude_pk is not None else None)


def instance_booking_query(worker_ids, start: datetime, end: datetime, *, exclude_pk=None):
    """Live instances on these workers (None: all) overlapping [start, end), as BOOKING_COLUMNS tuples.
    Served by the (worker, status, timeslot_start) index: a seek per worker and live status, a range on the
    start; terminated history is never read."""
    qs = LabletInstance.objects.filter(status__in=LIVE, timeslot_start__lt=end, timeslot_end__gt=start)
    qs = qs.filter(worker_id__isnull=False) if worker_ids is None else qs.filter(worker_id__in=list(worker_ids))
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return qs.order_by().values_list(*BOOKING_COLUMNS)


def instance_bookings(worker_ids, start: datetime, end: datetime, *, exclude_pk=None) -> list[tuple]:
    """The ledger's lablet-instance rows (the `worker_bookings` receiver of apps.lablets)."""
    return [(*row, INSTANCE) for row in instance_booking_query(worker_ids, start, end, exclude_pk=exclude_pk)]


class Planner:
    """Workers and their bookings in memory; chooses a worker for a need and slot, books it."""

    def __init__(self, workers: list[Worker], bookings, *, policy: str | None = None):
        self.policy = policy or settings.SCHEDULER_POLICY
        self.workers = workers
        self.timelines = {worker.pk: Timeline() for worker in workers}
        self.version = {worker.pk: 0 for worker in workers}
        self._cache: dict[tuple, dict[int, tuple[int, Assessment]]] = {}
        self._heaps: dict[tuple, list] = {}
        self._dirty: dict[tuple, set[int]] = {}
        self._by_pk = {worker.pk: worker for worker in workers}
        for worker_pk, start, end, *need, _kind in bookings:
            if worker_pk in self.timelines:
                self.timelines[worker_pk].add(start, end, (*need, 1))

    @classmethod
    def for_slot(cls, start: datetime, end: datetime, *, exclude_pk=None, policy=None,
                 workers: list[Worker] | None = None) -> "Planner":
        workers = candidate_workers() if workers is None else workers
        bookings = live_bookings([w.pk for w in workers], start, end, exclude_pk=exclude_pk)
        return cls(workers, bookings, policy=policy)

    def assess_all(self, need: Vector, start: datetime, end: datetime) -> list[Assessment]:
        """Every worker judged (cached per need and slot until a booking changes that worker)."""
        cache = self._cache.setdefault((need, start, end), {})
        out = []
        for worker in self.workers:
            version = self.version[worker.pk]
            hit = cache.get(worker.pk)
            if hit is None or hit[0] != version:
                hit = (version, assess(worker, self.timelines[worker.pk], need, start, end))
                cache[worker.pk] = hit
            out.append(hit[1])
        return out

    def ranked(self, need: Vector, start: datetime, end: datetime) -> list[Assessment]:
        """The workers that fit, best first."""
        fitting = [a for a in self.assess_all(need, start, end) if a.fits]
        fitting.sort(key=preference(self.policy))
        return fitting

    def choose(self, need: Vector, start: datetime, end: datetime) -> Assessment | None:
        """The best fitting worker, or None. O(log workers) for a need and slot asked before: each such
        question keeps a heap of fitting workers by preference; a booking marks the worker dirty in the
        heaps of the slots it overlaps, and only dirty workers are judged again (an entry judged before
        its worker's latest booking is recognised by its version and judged again when it surfaces)."""
        key = (need, start, end)
        rank = preference(self.policy)
        heap = self._heaps.get(key)
        if heap is None:
            heap = [(rank(a), self.version[a.worker.pk], a) for a in self.assess_all(need, start, end) if a.fits]
            heapq.heapify(heap)
            self._heaps[key] = heap
            self._dirty[key] = set()
        dirty = self._dirty[key]
        if dirty:
            by_pk = self._by_pk
            for worker_pk in dirty:
                again = assess(by_pk[worker_pk], self.timelines[worker_pk], need, start, end)
                if again.fits:
                    heapq.heappush(heap, (rank(again), self.version[worker_pk], again))
            dirty.clear()
        while heap:
            _, version, assessment = heap[0]
            worker_pk = assessment.worker.pk
            if version == self.version[worker_pk]:
                return assessment
            heapq.heappop(heap)  # judged before the worker's latest booking (maybe for another slot): judge again
            again = assess(assessment.worker, self.timelines[worker_pk], need, start, end)
            if again.fits:
                heapq.heappush(heap, (rank(again), self.version[worker_pk], again))
        return None

    def book(self, worker_pk: int, need: Vector, start: datetime, end: datetime) -> None:
        self.timelines[worker_pk].add(start, end, need)
        self.version[worker_pk] += 1
        for key, dirty in self._dirty.items():
            if key[1] < end and key[2] > start:  # only the slots this booking overlaps change
                dirty.add(worker_pk)
