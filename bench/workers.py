"""Benchmark the two worker jobs against the simulators on 127.0.0.1.

    .venv/bin/python -m bench.workers [--workers 500] [--cml-workers 100] [--cml-latency 0.2]

- ec2_sync over N workers: EC2 API calls made (goal: at most 2 for 500 workers) and wall time, once
  with nothing to change and once with 10 % of the instances stopped outside LabManager.
- cml_health over M running workers whose CML answers every request after `--cml-latency` seconds:
  wall time of the concurrent check (goal: under 3 s for 100 workers at 200 ms), beside the same
  check with concurrency 1 on a tenth of the workers, scaled up (the sequential cost).

Rows are seeded with bulk_create (bench set-up only; the application writes through its services).
"""

import os
import time

from bench.common import BENCH_DIR, argument_parser, fresh_sqlite, run, setup_django

DB_PATH = BENCH_DIR / "workers.sqlite3"


def setup_workers_django() -> None:
    fresh_sqlite(DB_PATH)
    setup_django(dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings", SQLITE_PATH=str(DB_PATH),
                      DEBUG="false", LOG_LEVEL="WARNING", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench"),
                 migrate=True)


def bench_ec2_sync(count: int) -> dict:
    from django.conf import settings

    from apps.workers import ec2
    from apps.workers.models import Worker
    from apps.workers.services import worker_ec2_sync
    from simulators.ec2 import Ec2Simulator

    sim = Ec2Simulator().start()
    settings.AWS_ENDPOINT_URL = sim.url
    try:
        ids = []
        while len(ids) < count:  # moto launches up to 100 per call comfortably
            batch = min(100, count - len(ids))
            response = ec2._call("us-west-2", "run_instances", ImageId="ami-12c6146b", InstanceType="m5zn.metal",
                                 MinCount=batch, MaxCount=batch,
                                 TagSpecifications=[{"ResourceType": "instance",
                                                     "Tags": [{"Key": ec2.MANAGED_TAG, "Value": "true"}]}])
            ids.extend(i["InstanceId"] for i in response["Instances"])
        Worker.objects.bulk_create([
            Worker(name=f"bench-{n:04d}", aws_instance_id=iid, aws_region="us-west-2", instance_type="m5zn.metal",
                   status="running", cpu_cores=48, memory_gb=192, storage_gb=500, max_nodes=100)
            for n, iid in enumerate(ids)
        ])
        results = {}
        for label in ("no changes", "10% stopped outside"):
            if label != "no changes":
                ec2._call("us-west-2", "stop_instances", InstanceIds=ids[: count // 10])
            sim.calls.clear()
            started = time.perf_counter()
            summary = worker_ec2_sync()
            elapsed = time.perf_counter() - started
            describe_calls = sum(1 for c in sim.calls if c == "DescribeInstances")
            results[label] = (summary, elapsed, describe_calls)
        return results
    finally:
        sim.stop()


def bench_cml_health(count: int, latency: float) -> dict:
    from django.conf import settings

    from apps.workers.models import Worker
    from apps.workers.services import worker_cml_health_all
    from simulators.cml import CmlSimulator

    sim = CmlSimulator(boot_delay=0.0).start()
    settings.CML_URL_OVERRIDE, settings.CML_USERNAME, settings.CML_PASSWORD = sim.url, "admin", "sim-password"
    settings.CML_ALLOW_HTTP = True  # the simulator speaks plain http on loopback
    settings.CML_TIMEOUT_SECONDS = 10.0
    try:
        Worker.objects.all().delete()
        Worker.objects.bulk_create([
            Worker(name=f"cml-{n:03d}", aws_instance_id=f"i-{n:017x}", status="running", cpu_cores=48, memory_gb=192,
                   storage_gb=500, max_nodes=100)
            for n in range(count)
        ])
        sim.set_faults(slow=latency)
        results = {}
        started = time.perf_counter()
        summary = worker_cml_health_all()
        results["concurrent"] = (summary, time.perf_counter() - started, settings.CML_HEALTH_CONCURRENCY)
        requests = sum(sim.calls.values()) if isinstance(sim.calls, dict) else None
        sample = max(1, count // 10)
        keep = list(Worker.objects.order_by("pk").values_list("pk", flat=True)[:sample])
        Worker.objects.exclude(pk__in=keep).delete()
        settings.CML_HEALTH_CONCURRENCY = 1
        started = time.perf_counter()
        worker_cml_health_all()
        results["sequential"] = ((time.perf_counter() - started) * count / sample, sample)
        results["requests"] = requests
        return results
    finally:
        sim.stop()


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0], __spec__.name)
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--cml-workers", type=int, default=100)
    parser.add_argument("--cml-latency", type=float, default=0.2)
    args = parser.parse_args()
    setup_workers_django()

    print(f"ec2_sync over {args.workers} workers (moto on 127.0.0.1):")
    for label, (summary, elapsed, describes) in bench_ec2_sync(args.workers).items():
        verdict = "met" if summary["ec2_calls"] <= 2 * max(1, args.workers // 500) else "NOT met"
        print(f"  {label:<22} EC2 calls: {summary['ec2_calls']} (DescribeInstances seen by EC2: {describes}), "
              f"changed: {summary['updated']}, wall: {elapsed:.2f} s   goal <= 2 calls per 500 workers: {verdict}")

    print(f"cml_health over {args.cml_workers} running workers, CML answering each request in {args.cml_latency * 1000:.0f} ms:")
    results = bench_cml_health(args.cml_workers, args.cml_latency)
    summary, elapsed, concurrency = results["concurrent"]
    sequential, sample = results["sequential"]
    verdict = "met" if elapsed < 3.0 else "NOT met"
    print(f"  concurrent (up to {concurrency} at once): {elapsed:.2f} s, {summary['available']}/{summary['checked']} available"
          f"   goal < 3 s: {verdict}")
    print(f"  sequential (measured on {sample}, scaled): {sequential:.1f} s   speed-up x{sequential / elapsed:.0f}")


if __name__ == "__main__":
    run(main)
