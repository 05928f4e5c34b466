"""Benchmark: server time to render the dashboard's instances page with 10,000 instances and the overview
with 200 workers, then the fleet page and the per-worker timeline with 500 workers and 2,000 more timeslots
today (goal: under 150 ms each, and a query count that does not grow with the rows).

Run from the repository root (`make bench`):

    .venv/bin/python -m bench.dashboard [--instances 10000] [--workers 200] [--renders 30]
                                        [--fleet-workers 500] [--day-bars 2000]

What it does:
1. Creates a fresh SQLite database var/bench/dashboard.sqlite3 and migrates it.
2. Seeds a small fleet first (10 instances, 2 workers) and counts the SQL queries of each page; then
   bulk-inserts up to `--instances` instances and `--workers` workers (every state, spread over the
   workers; `status` written directly: fine for a benchmark of reads, not how the application changes
   states) and counts again. The counts must be equal.
3. Renders each page `--renders` times in-process with Django's test client as an admin (who sees every
   instance) and prints the p50 and p95 of the server time (view, queries, template; no network).
   The other pages (timeline, definitions, fleet, reports, audit, sessions) are measured the same way.
4. Grows the fleet to `--fleet-workers` workers and adds `--day-bars` timeslots today spread over all of
   them (so the day has well over 1,000 bars), counts the queries again and measures the fleet page and
   the timeline (their first page, a later page, a status filter, one worker's row) at that size.
"""

import os
import time
from datetime import datetime, time as clock, timedelta

from bench.common import BENCH_DIR, argument_parser, fresh_sqlite, percentile, run, setup_django

DB_PATH = BENCH_DIR / "dashboard.sqlite3"
PAGES = {"instances": "/dashboard/instances/", "overview": "/dashboard/"}
# The other pages, measured the same way (the issue sets no figure for them): their queries must not grow either.
OTHER_PAGES = {"timeline": "/dashboard/instances/timeline/", "definitions": "/dashboard/definitions/",
               "fleet": "/dashboard/fleet/", "reports": "/dashboard/reports/", "audit": "/dashboard/audit/",
               "sessions": "/dashboard/sessions/"}
# The pages a growing fleet must keep fast (issue 22: < 150 ms at 500 workers), measured at `--fleet-workers`.
# `{worker}` is the public id of a worker with timeslots today; the base paths are compared with their counts
# at `--workers` workers (the same queries whatever the fleet).
SCALE_PAGES = {"fleet": "/dashboard/fleet/", "timeline": "/dashboard/instances/timeline/"}
SCALE_VARIANTS = {"fleet page 5": "/dashboard/fleet/?page=5",
                  "fleet running": "/dashboard/fleet/?status=running",
                  "fleet name": "/dashboard/fleet/?q=worker-04",
                  "timeline page 10": "/dashboard/instances/timeline/?page=10",
                  "timeline 1 worker": "/dashboard/instances/timeline/?worker={worker}"}
STATES = ["pending", "scheduled", "instantiating", "running", "collecting", "grading", "stopping", "stopped",
          "archived", "terminated"]


def setup_dashboard_django():
    fresh_sqlite(DB_PATH)
    setup_django(dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings", SQLITE_PATH=str(DB_PATH),
                      DEBUG="false", LOG_LEVEL="WARNING", ALLOWED_HOSTS="testserver"), migrate=True)


def seed(*, instances: int, workers: int, start: int):
    """Bulk-insert instances and workers, numbered from `start` (call again to grow the data)."""
    from django.utils import timezone

    from apps.lablets.models import LabletDefinition, LabletInstance
    from apps.workers.models import Worker

    yaml = "lab:\n  title: bench\nnodes: []\nlinks: []\n"
    definition, _ = LabletDefinition.objects.get_or_create(
        name="bench-lab", version="1.0.0",
        defaults=dict(cml_lab_yaml=yaml, content_hash=LabletDefinition.hash_yaml(yaml), cpu_cores=4, memory_gb=8,
                      storage_gb=50, node_count=5))
    fleet = Worker.objects.bulk_create([
        Worker(name=f"bench-worker-{start + i:04d}", status="running", cpu_cores=48, memory_gb=192, storage_gb=500,
               max_nodes=100, cml_service_status="available", cpu_usage_percent=(i * 7) % 100)
        for i in range(workers)
    ])
    fleet = fleet or list(Worker.objects.all())
    now = timezone.now()
    LabletInstance.objects.bulk_create([
        LabletInstance(definition=definition, owner_id=f"student-{start + i:06d}", status=STATES[i % len(STATES)],
                       worker=fleet[i % len(fleet)], timeslot_start=now + timedelta(minutes=i % 600),
                       timeslot_end=now + timedelta(minutes=i % 600 + 120), cpu_cores=4, memory_gb=8,
                       storage_gb=50, node_count=5)
        for i in range(instances)
    ], batch_size=2000)


def seed_day(*, workers: int, bars: int, start: int):
    """Grow the fleet by `workers` workers (numbered from `start`) and book `bars` timeslots of 90 minutes
    today, spread over every worker of the fleet."""
    from django.utils import timezone

    from apps.lablets.models import LabletDefinition, LabletInstance
    from apps.workers.models import Worker

    Worker.objects.bulk_create([
        Worker(name=f"bench-worker-{start + i:04d}", status="running", cpu_cores=48, memory_gb=192, storage_gb=500,
               max_nodes=100, cml_service_status="available", cpu_usage_percent=(i * 7) % 100)
        for i in range(workers)
    ])
    fleet = list(Worker.objects.order_by("name"))
    definition = LabletDefinition.objects.get(name="bench-lab")
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), clock.min))
    LabletInstance.objects.bulk_create([
        LabletInstance(definition=definition, owner_id=f"day-{i:06d}", status=("scheduled", "running")[i % 2],
                       worker=fleet[i % len(fleet)], timeslot_start=midnight + timedelta(minutes=(i * 47) % 1320),
                       timeslot_end=midnight + timedelta(minutes=(i * 47) % 1320 + 90), cpu_cores=4, memory_gb=8,
                       storage_gb=50, node_count=5)
        for i in range(bars)
    ], batch_size=2000)
    return fleet


def queries(client, path) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
        assert response.status_code == 200, response.status_code
    return len(captured)


def timings(client, path, renders: int) -> list[float]:
    client.get(path)  # warm
    samples = []
    for _ in range(renders):
        started = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return sorted(samples)


def main():
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--fleet-workers", type=int, default=500)
    parser.add_argument("--day-bars", type=int, default=2000)
    args = parser.parse_args()
    setup_dashboard_django()
    from django.test import Client

    from apps.identity.services import user_ensure_with_role

    admin, _ = user_ensure_with_role(username="bench-admin", role="admin", actor="bench")
    client = Client()
    client.force_login(admin)
    every = {**PAGES, **OTHER_PAGES}
    seed(instances=10, workers=2, start=0)
    few = {name: queries(client, path) for name, path in every.items()}
    seed(instances=args.instances - 10, workers=args.workers - 2, start=10)
    many = {name: queries(client, path) for name, path in every.items()}
    print(f"dashboard: {args.instances} instances, {args.workers} workers, {args.renders} renders per page (in-process)")
    ok = True
    for name, path in every.items():
        if name == next(iter(OTHER_PAGES)):
            print("  the other pages (no figure set for them):")
        samples = timings(client, path, args.renders)
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        same = few[name] == many[name]
        if name in PAGES:
            ok = ok and same and p50 < 150
        print(f"  {path:32} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  queries {few[name]} (10 rows) / {many[name]} "
              f"(all rows) {'same' if same else 'GROWS'}")
    print("goal (instances and overview: p50 < 150 ms, queries independent of rows):", "met" if ok else "NOT met")

    fleet = seed_day(workers=args.fleet_workers - args.workers, bars=args.day_bars, start=args.workers)
    grown = {name: queries(client, path) for name, path in SCALE_PAGES.items()}
    variants = {name: path.format(worker=fleet[len(fleet) // 2].public_id) for name, path in SCALE_VARIANTS.items()}
    print(f"a growing fleet: {args.fleet_workers} workers, {args.day_bars} more timeslots today "
          f"({args.instances + args.day_bars} instances)")
    scale_ok = True
    for name, path in {**SCALE_PAGES, **variants}.items():
        samples = timings(client, path, args.renders)
        p50, p95 = percentile(samples, 50), percentile(samples, 95)
        if name in SCALE_PAGES:
            same = grown[name] == many[name]
            scale_ok = scale_ok and same and p50 < 150
            count = (f"queries {many[name]} ({args.workers} workers) / {grown[name]} ({args.fleet_workers}) "
                     f"{'same' if same else 'GROWS'}")
        else:
            count = f"queries {queries(client, path)}"
        print(f"  {path:60} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  {count}")
    print(f"goal (fleet and timeline at {args.fleet_workers} workers: p50 < 150 ms, queries independent of the fleet):",
          "met" if scale_ok else "NOT met")


if __name__ == "__main__":
    run(main)
