"""Benchmark: the fleet planner's decision. Run from the repository root (`make bench`):

    .venv/bin/python -m bench.fleet_planner [--bookings 10000] [--sessions 1000] [--workers 500] [--runs 5]

The figure (docs/performance.md): how long `apps.fleet.planner.plan_fleet` takes to decide over `--workers`
workers (450 running, 50 stopped, 20 of them of a scalable template), `--bookings` lablet instances in the next
24 hours (80 % scheduled on the workers, 20 % PENDING: a class of 16-core reservations the fleet cannot hold
all of, so part of them goes to virtual workers of two scalable templates) and `--sessions` waiting sessions in
10 pools (5 of them without a worker: a launch each); the median of `--runs` runs (goal: under 2 s). Then the
fleet plan page's selector (`apps.fleet.selectors.fleet_plan`, the same decision plus 48 buckets) once.

It uses a fresh SQLite database under var/bench/ (or DATABASE_URL if you set one: then it must be a throwaway
database, the script empties the tables it fills). Seeding uses bulk_create and writes `status` directly: fine
for a benchmark, not how the application changes states. Nothing is started; no network.
"""

import statistics
import time
from datetime import timedelta
from decimal import Decimal

from bench.common import BENCH_DIR, Failure, argument_parser, run, setup_bench_database

DB_PATH = BENCH_DIR / "fleet_planner.sqlite3"
POOLS = 10


def parse_args():
    parser = argument_parser(__doc__.splitlines()[0], __spec__.name)
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    return parser.parse_args()


def setup_bench_django():
    # The limits let the launches through: the whole decision is timed.
    setup_bench_database(DB_PATH, FLEET_MAX_WORKERS=1000)


def seed(args):
    from django.utils import timezone

    from apps.lablets.models import LabletDefinition, LabletInstance
    from apps.sessions.models import Session, SessionPool
    from apps.workers.models import Worker, WorkerTemplate

    LabletInstance.objects.all().delete()
    Session.objects.all().delete()
    Worker.objects.all().delete()
    small = WorkerTemplate.objects.create(name="bench-small", instance_type="m5.4xlarge", cpu_cores=16,
                                          memory_gb=64, storage_gb=250, max_nodes=30, scalable=True,
                                          cost_per_hour=Decimal("0.8"), ami_id="ami-bench")
    large = WorkerTemplate.objects.create(name="bench-large", instance_type="m5zn.metal", cpu_cores=48,
                                          memory_gb=192, storage_gb=500, max_nodes=100, scalable=True,
                                          cost_per_hour=Decimal("4"), ami_id="ami-bench")
    with_pool = args.workers // 20
    Worker.objects.bulk_create([
        Worker(name=f"bench-{n:03d}", status="stopped" if n % 10 == 9 else "running", aws_instance_id=f"i-{n:017x}",
               cml_service_status="available", license_status="registered", license_tier="enterprise",
               cpu_cores=48, memory_gb=192, storage_gb=1000, max_nodes=100,
               template=large if n % 25 == 0 else None,
               session_pool=f"pool-{n % (POOLS // 2)}" if n < with_pool else "",
               status_changed_at=timezone.now() - timedelta(hours=30))
        for n in range(args.workers)
    ])
    workers = list(Worker.objects.order_by("pk"))
    definition = LabletDefinition.objects.create(
        name="bench", version="1", cml_lab_yaml="lab: {}\n", content_hash=LabletDefinition.hash_yaml("lab: {}\n"),
        cpu_cores=4, memory_gb=8, storage_gb=10, node_count=2, default_duration_minutes=120,
        max_duration_minutes=240)
    day = (timezone.now() + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    slots = [(day + timedelta(minutes=90 * (n % 8)), day + timedelta(minutes=90 * (n % 8) + 120)) for n in range(40)]
    scheduled = args.bookings * 4 // 5
    rows = [LabletInstance(definition=definition, owner_id=f"s-{n:05d}", worker=workers[n % len(workers)],
                           status="scheduled", timeslot_start=slots[n % 40][0], timeslot_end=slots[n % 40][1],
                           cpu_cores=4, memory_gb=8, storage_gb=10, node_count=2)
            for n in range(scheduled)]
    # The pending class: 16-core labs at one slot, more than the fleet holds beside its bookings.
    rows += [LabletInstance(definition=definition, owner_id=f"p-{n:05d}", status="pending",
                            timeslot_start=slots[3][0], timeslot_end=slots[3][1], priority=1 + n % 10,
                            cpu_cores=16, memory_gb=32, storage_gb=20, node_count=4)
             for n in range(args.bookings - scheduled)]
    LabletInstance.objects.bulk_create(rows, batch_size=2000)
    pools = [SessionPool.objects.create(name=f"pool-{n}") for n in range(POOLS)]
    now = timezone.now()
    Session.objects.bulk_create([
        Session(pool=pools[n % POOLS], ticket=n + 1, status="waiting", actor="bench", created_at=now,
                last_seen_at=now)
        for n in range(args.sessions)
    ], batch_size=2000)
    return workers


def main():
    args = parse_args()
    setup_bench_django()
    from django.db import connection
    from django.utils import timezone

    from apps.fleet.planner import plan_fleet
    from apps.fleet.selectors import fleet_plan

    print(f"database: {connection.vendor}")
    seed(args)
    timings, plan = [], None
    for _ in range(args.runs + 1):  # the first run warms the caches (and is not counted)
        began = time.perf_counter()
        plan = plan_fleet(now=timezone.now())
        timings.append(time.perf_counter() - began)
    median = statistics.median(timings[1:])
    launches = [launch for launch in plan.launches if not launch.pool]
    pool_launches = [launch for launch in plan.launches if launch.pool]
    if not launches or len(pool_launches) != POOLS // 2:
        raise Failure(f"expected launches for the demand and one per workerless pool: {len(launches)}, "
                      f"{len(pool_launches)}")
    by_template = {}
    for launch in launches:
        by_template[launch.template.name] = by_template.get(launch.template.name, 0) + 1
    print(f"planner decision over {args.bookings:,} bookings ({plan.figures['pending']:,} pending, "
          f"{plan.figures['unplaced']:,} beyond the fleet), {args.sessions:,} waiting sessions, {args.workers} workers: "
          f"median {1000 * median:.0f} ms of {args.runs} (min {1000 * min(timings[1:]):.0f}, max "
          f"{1000 * max(timings[1:]):.0f}); goal < 2000 ms")
    print(f"  plan: {len(launches)} launch(es) {by_template}, {len(pool_launches)} for session pools, "
          f"{len(plan.terminations)} termination(s), {len(plan.held())} held")
    began = time.perf_counter()
    page = fleet_plan()
    print(f"fleet plan page's selector (decision + {len(page['rows'])} buckets): "
          f"{1000 * (time.perf_counter() - began):.0f} ms")
    if median >= 2.0:
        raise Failure(f"the planner took {median:.2f} s (goal < 2 s)")


if __name__ == "__main__":
    run(main)
