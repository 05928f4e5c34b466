"""The capacity ledger: what each worker holds, and will hold over time (docs/workers.md#capacity-and-scaling).

One place answers it for every kind of work a worker's CML runs:
- lablet instances, by their timeslot (apps.lablets, while live);
- remote-lab session labs, from when they start until they are torn down (apps.sessions; open-ended);
- warm labs, booted ahead for a definition's warm pool (apps.lablets; open-ended).

The apps that place work sit above apps.workers, so they answer through the `worker_bookings` signal
(received in their `AppConfig.ready()`); `bookings()` gathers the answers. Placement (apps.lablets.placement),
the scheduler's preview, idle detection, the dashboard's bars, the reports and the fleet planner read it here,
never the instance or session-lab tables on their own.

A holding is a row `(worker_pk, start, end, cpu_cores, memory_gb, storage_gb, node_count, port_count, kind)`;
`end` is OPEN_END while the holding lasts until something removes it. Capacity is a vector over DIMENSIONS;
every holding also counts one lab against the `instances` dimension (a personal licence's live-lab limit).

Concurrency: whoever adds a holding to a worker locks the worker's row (`SELECT ... FOR UPDATE`) and reads the
ledger again under that lock before it writes: a lablet placement (apps.lablets.services.scheduling), a session
lab start (apps.sessions.services.labs) and a warm lab alike, so no worker is ever committed beyond its
capacity in any dimension, whichever kinds of work compete for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.dispatch import Signal
from django.utils import timezone

# The dimensions of a need and of a capacity, in this order.
DIMENSIONS = ("cpu_cores", "memory_gb", "storage_gb", "node_count", "port_count", "instances")
DIMENSION_LABELS = {
    "cpu_cores": "CPU cores",
    "memory_gb": "memory (GB)",
    "storage_gb": "storage (GB)",
    "node_count": "nodes",
    "port_count": "console ports",
    "instances": "live labs (personal licence)",
}
UTILISATION_DIMENSIONS = 4  # cpu, memory, storage, nodes: what "utilisation" means in reports
UNLIMITED = 1 << 40
# The end of a holding that lasts until it is removed (a session lab, a warm lab).
OPEN_END = datetime(9999, 12, 31, tzinfo=dt_timezone.utc)

# Kinds of holding.
INSTANCE, SESSION_LAB, WARM_LAB = "instance", "session_lab", "warm_lab"
KINDS = (INSTANCE, SESSION_LAB, WARM_LAB)

Vector = tuple[int, ...]
_EPSILON = timedelta(microseconds=1)

# Sent with `worker_ids` (a list of worker pks, or None for every worker), `start`, `end` (the window: only
# holdings overlapping [start, end) are wanted) and `exclude` ({kind: pk} of one holding to leave out, e.g. the
# instance being re-placed). Each receiver returns an iterable of holding rows (see the module's docstring).
worker_bookings = Signal()


def capacity_of(worker) -> Vector:
    """A worker's capacity as a vector over DIMENSIONS (a model or a plain row with the same attributes)."""
    ports = max(0, settings.CONSOLE_PORT_MAX - settings.CONSOLE_PORT_MIN + 1)
    instances = settings.PERSONAL_LICENSE_MAX_LIVE_INSTANCES if worker.license_tier == "personal" else UNLIMITED
    return (worker.cpu_cores, worker.memory_gb, worker.storage_gb, worker.max_nodes, ports, instances)


def bookings(worker_ids, start: datetime, end: datetime, *, exclude: dict | None = None) -> list[tuple]:
    """Every holding on these workers (None: all) overlapping [start, end), of every kind."""
    from apps.workers.models import Worker

    ids = None if worker_ids is None else list(worker_ids)
    rows: list[tuple] = []
    if ids == []:
        return rows
    for _receiver, found in worker_bookings.send(sender=Worker, worker_ids=ids, start=start, end=end,
                                                 exclude=exclude or {}):
        rows.extend(found)
    return rows


def need_vector(row) -> Vector:
    """The need of a holding row as a vector over DIMENSIONS (each holding is one lab)."""
    return (row[3], row[4], row[5], row[6], row[7], 1)


def usage_at(worker_ids, moment: datetime) -> dict[int, dict]:
    """What each worker holds at `moment`: {worker_pk: {"total": vector, "<kind>": count, ...}}, workers
    holding nothing left out. One round of the ledger (one query per kind)."""
    out: dict[int, dict] = {}
    for row in bookings(worker_ids, moment, moment + _EPSILON):
        entry = out.setdefault(row[0], {"total": [0] * len(DIMENSIONS), **dict.fromkeys(KINDS, 0)})
        total = entry["total"]
        for d, amount in enumerate(need_vector(row)):
            total[d] += amount
        entry[row[8]] += 1
    for entry in out.values():
        entry["total"] = tuple(entry["total"])
    return out


def peak_of(rows, start: datetime, end: datetime) -> list[int]:
    """The highest total need of these holding rows at any moment of [start, end), per dimension (a sweep
    over their starts and ends; the rows need not overlap each other)."""
    events: list[tuple[datetime, int, Vector]] = []
    for row in rows:
        if row[1] < end and row[2] > start:
            need = need_vector(row)
            events.append((max(row[1], start), 1, need))
            if row[2] < end:
                events.append((row[2], -1, need))
    events.sort(key=lambda event: (event[0], event[1]))  # ends before starts at the same moment
    level = [0] * len(DIMENSIONS)
    best = [0] * len(DIMENSIONS)
    for index, (moment, sign, need) in enumerate(events):
        for d, amount in enumerate(need):
            level[d] += sign * amount
        if index + 1 == len(events) or events[index + 1][0] != moment:  # the level from this moment on
            best = [max(b, v) for b, v in zip(best, level)]
    return best


def shortfall(worker, need: Vector, start: datetime, end: datetime, *, exclude: dict | None = None) -> dict | None:
    """Whether `need` (a vector over DIMENSIONS) fits on `worker` beside everything it holds during [start,
    end): None when it does, else the first dimension short, {"dimension", "needs", "free", "capacity",
    "detail"}. The caller holds the worker's row lock (see the module's docstring)."""
    capacity = capacity_of(worker)
    peak = peak_of(bookings([worker.pk], start, end, exclude=exclude), start, end)
    for d, name in enumerate(DIMENSIONS):
        if peak[d] + need[d] > capacity[d]:
            free = max(0, capacity[d] - peak[d])
            return {"dimension": name, "needs": need[d], "free": free, "capacity": capacity[d],
                    "detail": f"{DIMENSION_LABELS[name]}: needs {need[d]}, {free} free of {capacity[d]}"}
    return None


def commitments(worker_ids, moment: datetime) -> dict[int, dict]:
    """What each worker is committed to from `moment` on: {worker_pk: {"peak": vector (the most it holds at
    any moment from then on, per dimension), "holdings": count, "<kind>": count, ...}}, workers holding
    nothing left out. What the fleet's bars and CML health figures show, and what makes a worker busy (its
    termination refused, never stopped for idleness). One round of the ledger."""
    rows_by_worker: dict[int, list] = {}
    for row in bookings(worker_ids, moment, OPEN_END):
        rows_by_worker.setdefault(row[0], []).append(row)
    out = {}
    for worker_pk, rows in rows_by_worker.items():
        entry = {"peak": tuple(peak_of(rows, moment, OPEN_END)), "holdings": len(rows), **dict.fromkeys(KINDS, 0)}
        for row in rows:
            entry[row[8]] += 1
        out[worker_pk] = entry
    return out


def committed(worker, moment: datetime | None = None) -> dict:
    """commitments() of one worker, zeros when it holds nothing."""
    moment = moment or timezone.now()
    return commitments([worker.pk], moment).get(worker.pk) or {
        "peak": (0,) * len(DIMENSIONS), "holdings": 0, **dict.fromkeys(KINDS, 0)}
