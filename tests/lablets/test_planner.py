"""The in-memory planner against a brute-force oracle (no database): random fleets, random bookings,
random requests. The planner's heaps and caches must choose exactly what a full re-evaluation chooses,
and never overbook a worker at any moment."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from apps.lablets.placement import DIMENSIONS, Planner, Timeline, WorkerView, assess, preference

T0 = datetime(2030, 1, 1, 8, tzinfo=timezone.utc)


def _worker(pk, rng, status="running"):
    return WorkerView(pk=pk, public_id=f"worker-{pk}", name=f"w{pk}", status=status, draining=False,
                      cml_service_status="available", license_status="registered", license_tier="enterprise",
                      aws_instance_id=f"i-{pk:08x}", cpu_cores=rng.choice([8, 16, 32]), memory_gb=64,
                      storage_gb=500, max_nodes=rng.choice([10, 20]))


def _request(rng):
    start = T0 + timedelta(minutes=30 * rng.randrange(0, 12))
    end = start + timedelta(minutes=30 * rng.randrange(1, 6))
    need = (rng.choice([2, 4, 8]), rng.choice([4, 8]), 20, rng.choice([1, 2, 5]), 0, 1)
    return need, start, end


def _oracle_choose(workers, bookings, need, start, end, policy):
    """Judge every worker from scratch, from the raw booking list."""
    fitting = []
    for worker in workers:
        timeline = Timeline()
        for worker_pk, b_start, b_end, b_need in bookings:
            if worker_pk == worker.pk:
                timeline.add(b_start, b_end, b_need)
        verdict = assess(worker, timeline, need, start, end)
        if verdict.fits:
            fitting.append(verdict)
    return min(fitting, key=preference(policy)).worker.pk if fitting else None


def _peak_ok(workers, bookings):
    for worker in workers:
        mine = [b for b in bookings if b[0] == worker.pk]
        capacity = (worker.cpu_cores, worker.memory_gb, worker.storage_gb, worker.max_nodes)
        for _, moment, _, _ in mine:
            for d in range(4):
                used = sum(n[d] for _, s, e, n in mine if s <= moment < e)
                if used > capacity[d]:
                    return False
    return True


@pytest.mark.parametrize("policy", ["best_fit", "spread"])
@pytest.mark.parametrize("seed", range(6))
def test_the_planner_chooses_what_a_full_re_evaluation_chooses(policy, seed):
    rng = random.Random(seed)
    workers = [_worker(pk, rng, status="running" if pk % 4 else "stopped") for pk in range(1, 13)]
    planner = Planner(workers, [], policy=policy)
    bookings = []
    requests = [_request(rng) for _ in range(12)]  # few distinct slots, asked again and again
    placed = refused = 0
    for _ in range(300):
        need, start, end = rng.choice(requests)
        expected = _oracle_choose(workers, bookings, need, start, end, policy)
        chosen = planner.choose(need, start, end)
        assert (chosen.worker.pk if chosen else None) == expected
        if chosen:
            planner.book(chosen.worker.pk, need, start, end)
            bookings.append((chosen.worker.pk, start, end, need))
            placed += 1
        else:
            refused += 1
    assert placed and refused  # the fleet filled up: both paths were exercised
    assert _peak_ok(workers, bookings)


def test_a_timeline_peak_is_the_highest_sum_at_any_moment_of_the_slot():
    timeline = Timeline()
    hour = timedelta(hours=1)
    one = (1,) + (0,) * (len(DIMENSIONS) - 1)
    timeline.add(T0, T0 + hour, one)  # 08-09
    timeline.add(T0 + hour, T0 + 2 * hour, one)  # 09-10 (back to back: never together)
    timeline.add(T0 + hour / 2, T0 + 3 * hour / 2, one)  # 08:30-09:30

    assert timeline.peak(T0, T0 + 2 * hour)[0] == 2
    assert timeline.peak(T0 + 2 * hour, T0 + 3 * hour)[0] == 0  # half-open: 10:00 is free
    assert timeline.peak(T0 - hour, T0)[0] == 0
    assert timeline.peak(T0 + hour / 4, T0 + hour / 3)[0] == 1
