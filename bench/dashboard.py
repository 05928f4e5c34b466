"""Benchmark: server time to render the dashboard's instances page with 10,000 instances and the overview
with 200 workers (goal: under 150 ms each, and a query count that does not grow with the rows).

Run from the repository root (`make bench`):

    .venv/bin/python -m bench.dashboard [--instances 10000] [--workers 200] [--renders 30]

What it does:
1. Creates a fresh SQLite database var/bench/dashboard.sqlite3 and migrates it.
2. Seeds a small fleet first (10 instances, 2 workers) and counts the SQL queries of each page; then
   bulk-inserts up to `--instances` instances and `--workers` workers (every state, spread over the
   workers; `status` written directly: fine for a benchmark of reads, not how the application changes
   states) and counts again. The counts must be equal.
3. Renders each page `--renders` times in-process with Django's test client as an admin (who sees every
   instance) and prints the p50 and p95 of the server time (view, queries, template; no network).
   The other pages (timeline, definitions, fleet, reports, audit, sessions) are measured the same way;
   the issue sets a figure for the first two only.
"""

import os
import time
from datetime import timedelta

from bench.common import BENCH_DIR, argument_parser, fresh_sqlite, percentile, run, setup_django

DB_PATH = BENCH_DIR / "dashboard.sqlite3"
PAGES = {"instances": "/dashboard/instances/", "overview": "/dashboard/"}
# The other pages, measured the same way (the issue sets no figure for them): their queries must not grow either.
OTHER_PAGES = {"timeline": "/dashboard/instances/timeline/", "definitions": "/dashboard/definitions/",
               "fleet": "/dashboard/fleet/", "reports": "/dashboard/reports/", "audit": "/dashboard/audit/",
               "sessions": "/dashboard/sessions/"}
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


if __name__ == "__main__":
    run(main)
