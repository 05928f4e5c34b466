"""Benchmark: placement. Run from the repository root (`make bench`):

    .venv/bin/python -m bench.placement [--instances 10000] [--workers 200] [--samples 200]

Two figures (docs/performance.md):
1. The scheduler pass placing `--instances` PENDING instances over `--workers` running workers: total
   wall time (goal: under 20 s for 10,000 over 200) and how many were placed. The instances are spread
   over 40 class slots in one day, sized so that the fleet can hold them all.
2. The cost of one placement through `lablet_instance_create` (the API's path: checks, insert, audit,
   placement with the worker row lock) with 1,000 and then 100,000 past (terminated) instances in
   the database, on the same workers and live bookings: the ratio shows the interval query reads
   live bookings through its index and never scans history (goal: under 1.5).

It uses a fresh SQLite database under var/bench/ (or DATABASE_URL if you set one: then it must be a
throwaway database, the script empties the tables it fills). Seeding uses bulk_create and writes
`status` directly for the history rows and the workers: fine for a benchmark, not how the
application changes states. Nothing is started; no network.
"""

import statistics
import time
from datetime import timedelta

from bench.common import BENCH_DIR, argument_parser, run, setup_bench_database

DB_PATH = BENCH_DIR / "placement.sqlite3"


def parse_args():
    parser = argument_parser(__doc__.splitlines()[0], __spec__.name)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200, help="single placements timed per history size")
    parser.add_argument("--small-history", type=int, default=1_000)
    parser.add_argument("--large-history", type=int, default=100_000)
    return parser.parse_args()


def setup_placement_django():
    setup_bench_database(DB_PATH)


def make_workers(count):
    from apps.workers.models import Worker

    Worker.objects.all().delete()
    Worker.objects.bulk_create([
        Worker(name=f"bench-{n:03d}", status="running", cml_service_status="available", license_status="registered",
               license_tier="enterprise", cpu_cores=48, memory_gb=192, storage_gb=1000, max_nodes=100)
        for n in range(count)
    ])
    return list(Worker.objects.order_by("pk"))


def make_definition(name, cpu):
    from apps.lablets.models import LabletDefinition

    return LabletDefinition.objects.create(
        name=name, version="1", cml_lab_yaml="lab: {}\n", content_hash=LabletDefinition.hash_yaml("lab: {}\n"),
        cpu_cores=cpu, memory_gb=4, storage_gb=10, node_count=2, default_duration_minutes=120,
        max_duration_minutes=240)


def bench_batch(args, workers):
    from django.utils import timezone

    from apps.lablets.models import LabletInstance
    from apps.lablets.services.scheduling import lablet_instances_schedule_pending

    definition = make_definition("batch", cpu=4)
    day = (timezone.now() + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
    # 40 slots: 8 starts a day (every 90 min, 2 h long: neighbours overlap), 5 sizes of priority.
    slots = [(day + timedelta(minutes=90 * (n % 8)), day + timedelta(minutes=90 * (n % 8) + 120)) for n in range(40)]
    rows = [
        LabletInstance(definition=definition, owner_id=f"batch-{n:05d}", timeslot_start=slots[n % 40][0],
                       timeslot_end=slots[n % 40][1], priority=1 + n % 10, cpu_cores=4, memory_gb=4,
                       storage_gb=10, node_count=2)
        for n in range(args.instances)
    ]
    LabletInstance.objects.bulk_create(rows, batch_size=1000)
    started = time.perf_counter()
    summary = lablet_instances_schedule_pending(actor="bench")
    elapsed = time.perf_counter() - started
    scheduled = LabletInstance.objects.filter(definition=definition, status="scheduled").count()
    print(f"scheduler pass: {summary['placed']:,} of {summary['pending']:,} instances placed over "
          f"{len(workers)} workers in {elapsed:.2f} s ({1000 * elapsed / max(1, summary['placed']):.2f} ms each; "
          f"goal < 20 s)")
    assert scheduled == summary["placed"]
    LabletInstance.objects.filter(definition=definition).delete()
    return elapsed


def add_history(definition, workers, count, offset):
    from django.utils import timezone

    from apps.lablets.models import LabletInstance

    now = timezone.now()
    batch = []
    for n in range(count):
        start = now - timedelta(days=1 + (offset + n) % 700, hours=(offset + n) % 10)
        batch.append(LabletInstance(
            definition=definition, owner_id=f"past-{offset + n:06d}", worker=workers[(offset + n) % len(workers)],
            status="terminated", timeslot_start=start, timeslot_end=start + timedelta(hours=2),
            terminated_at=start + timedelta(hours=2), cpu_cores=4, memory_gb=4, storage_gb=10, node_count=2))
        if len(batch) == 5000:
            LabletInstance.objects.bulk_create(batch)
            batch = []
    if batch:
        LabletInstance.objects.bulk_create(batch)


def time_single_placements(definition, samples, label):
    from django.utils import timezone

    from apps.lablets.models import LabletInstance
    from apps.lablets.services import lablet_instance_create

    start = (timezone.now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    timings = []
    for n in range(samples):
        slot = start + timedelta(minutes=30 * (n % 6))
        began = time.perf_counter()
        instance = lablet_instance_create(actor="bench", definition_id=definition.public_id,
                                          owner_id=f"{label}-{n:05d}", timeslot_start=slot)
        timings.append(time.perf_counter() - began)
        assert instance.status == "scheduled", instance.status
    LabletInstance.objects.filter(owner_id__startswith=f"{label}-").delete()
    return statistics.median(timings), statistics.mean(timings)


def bench_history(args, workers):
    from apps.lablets.models import LabletInstance

    definition = make_definition("single", cpu=2)
    add_history(definition, workers, args.small_history, 0)
    time_single_placements(definition, 20, "warm")
    small = time_single_placements(definition, args.samples, "small")
    add_history(definition, workers, args.large_history - args.small_history, args.small_history)
    assert LabletInstance.objects.filter(status="terminated").count() >= args.large_history
    large = time_single_placements(definition, args.samples, "large")
    ratio = large[0] / small[0]
    print_query_plan(workers)
    print(f"one placement (lablet_instance_create), median of {args.samples}: "
          f"{1000 * small[0]:.2f} ms with {args.small_history:,} past instances, "
          f"{1000 * large[0]:.2f} ms with {args.large_history:,}: ratio {ratio:.2f} (goal < 1.5)")
    return ratio


def print_query_plan(workers):
    """How the database answers the interval query (the index, not a scan of history)."""
    from django.db import connection
    from django.utils import timezone

    from apps.lablets.placement import instance_booking_query

    start = timezone.now() + timedelta(days=2)
    qs = instance_booking_query([w.pk for w in workers[:5]], start, start + timedelta(hours=2))
    sql, params = qs.query.sql_with_params()
    explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(explain + sql, params)
        rows = cursor.fetchall()
    print("interval query plan:")
    for row in rows:
        print("   ", row[-1])


def bench_roster(workers, owners=200):
    """One POST /api/lablet-instances/bulk worth of work: a class roster in one call (service level)."""
    from django.utils import timezone

    from apps.lablets.models import LabletInstance
    from apps.lablets.services.bulk import lablet_instances_create_bulk

    definition = make_definition("roster", cpu=2)
    start = (timezone.now() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for all_or_nothing in (False, True):
        began = time.perf_counter()
        outcome = lablet_instances_create_bulk(
            actor="bench", definition_id=definition.public_id, owner_ids=[f"class-{n:03d}" for n in range(owners)],
            timeslot_start=start, all_or_nothing=all_or_nothing)
        elapsed = time.perf_counter() - began
        print(f"roster of {owners} (bulk, all_or_nothing={all_or_nothing}): {elapsed:.2f} s, "
              f"{outcome['totals']['scheduled']} scheduled")
        LabletInstance.objects.filter(definition=definition).delete()


def main():
    args = parse_args()
    setup_placement_django()
    from django.db import connection

    print(f"database: {connection.vendor}")
    workers = make_workers(args.workers)
    bench_batch(args, workers)
    bench_history(args, workers)
    bench_roster(workers)


if __name__ == "__main__":
    run(main)
