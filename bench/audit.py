"""Benchmark: the audit journal on PostgreSQL. Run from the repository root (`make bench`):

    .venv/bin/python -m bench.audit [--writers 8] [--seconds 10] [--events 1000000]

Two figures (docs/performance.md):
1. Appends per second with `--writers` concurrent writer processes (goal: at least 1,000/s). Each writer
   has its own connection and appends as the services do: one transaction per event with `audit_record`
   inside `transaction.atomic()`, then, after the commit, the seal that links it into the chain and the
   live publication (in-memory channel layer unless REDIS_URL is set). Each round is bounded by time
   (`--seconds`) and by count (`--max-appends` per writer); afterwards the chain must verify, gapless.
2. Verification of `--events` events (goal: under 15 s for 1,000,000, constant memory). The journal is
   emptied and seeded with COPY, the chain computed in Python with the application's own hash function
   (realistic rows: lablet instance transitions with their metadata). `chain_verify()` then runs in a
   fresh process, once at a tenth of the events and once at all of them: wall time, events per second,
   and the process's peak RSS (`resource.getrusage`), which should not grow with the journal.

Needs PostgreSQL. With DATABASE_URL set, that database is used and its journal EMPTIED (use a throwaway
database). Without it, the script creates `labmanager_bench_audit` on postgres://postgres@127.0.0.1:5432,
migrates it, and drops it at the end (also on errors and Ctrl-C). Nothing else is started.
"""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import timedelta

from bench.common import ROOT, argument_parser, pg_create, pg_drop, run, setup_django

BENCH_DB = "labmanager_bench_audit"


def parse_args():
    parser = argument_parser(__doc__.splitlines()[0], __spec__.name)
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer processes (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the append round (default 10)")
    parser.add_argument("--max-appends", type=int, default=100_000, help="cap on appends per writer")
    parser.add_argument("--events", type=int, default=1_000_000, help="journal size for the verification (default 1e6)")
    return parser.parse_args()


# --------------------------------------------------------------------------- database

def setup_audit_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    setup_django()
    from django.conf import settings
    from django.core.management import call_command

    if not settings.IS_POSTGRES:
        raise SystemExit("DATABASE_URL must point at PostgreSQL")
    call_command("migrate", verbosity=0)


def empty_journal() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditevent RESTART IDENTITY")


# --------------------------------------------------------------------------- 1. appends

def _writer(n: int, start, stop_at: list, max_appends: int, counts) -> None:
    from django.db import connection, transaction

    from apps.audit.services import audit_record

    connection.close()  # never share the parent's connection
    done = 0
    start.wait()
    deadline = time.perf_counter() + stop_at[0]
    while done < max_appends and time.perf_counter() < deadline:
        with transaction.atomic():
            audit_record(event_type="lablet_instance.scheduled", actor=f"bench-writer-{n}",
                         resource_type="lablet_instance", resource_id=f"li-{n}-{done}",
                         action="lablet_instance.transition",
                         metadata={"from": "pending", "to": "scheduled", "writer": n, "i": done})
        done += 1
    counts[n] = done
    connection.close()


def bench_appends(args) -> dict:
    from django.db import connections

    from apps.audit.models import AuditEvent
    from apps.audit.verify import chain_verify

    empty_journal()
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(args.writers + 1)
    counts = ctx.Array("l", args.writers)
    procs = [ctx.Process(target=_writer, args=(n, start, [args.seconds], args.max_appends, counts))
             for n in range(args.writers)]
    for proc in procs:
        proc.start()
    start.wait()
    t0 = time.perf_counter()
    for proc in procs:
        proc.join(args.seconds + 60)
    elapsed = time.perf_counter() - t0
    if any(proc.exitcode != 0 for proc in procs):
        raise RuntimeError(f"a writer failed: exit codes {[proc.exitcode for proc in procs]}")
    total = sum(counts)
    result = chain_verify()
    numbers = AuditEvent.objects.filter(sequence_num__isnull=False).count()
    unsealed = AuditEvent.objects.filter(sequence_num__isnull=True).count()
    if not result.valid or result.total_events != total or numbers != total or unsealed:
        raise RuntimeError(f"chain after the appends: {result}, {numbers} sealed, {unsealed} unsealed, {total} written")
    return {"appends": total, "elapsed": elapsed, "rate": total / elapsed, "per_writer": list(counts)}


# --------------------------------------------------------------------------- 2. verification

def seed(first: int, count: int, prev: str) -> str:
    """COPY `count` chained events numbered from `first` after `prev`; returns the last hash."""
    from django.db import connection
    from django.utils import timezone

    from apps.audit.chain import keyed_hash
    from apps.audit.keys import chain_keys

    base = timezone.now() - timedelta(days=30)
    columns = ("sequence_num", "prev_hash", "timestamp", "event_type", "actor", "user_id", "api_key_prefix",
               "resource_type", "resource_id", "action", "success", "ip_address", "error", "trace_id", "metadata")
    states = ["pending", "scheduled", "instantiating", "running", "stopping", "stopped", "archived"]
    keys = chain_keys()  # sealed as audit_seal() seals: keyed
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY audit_auditevent ({', '.join(columns)}, chain_key_id, event_hash) FROM STDIN") as copy:
            for seq in range(first, first + count):
                n = seq % 5000
                source, target = states[seq % 6], states[seq % 6 + 1]
                user = f"instructor{n % 40}"
                metadata = {"definition_id": f"ldf-{n % 97:08x}", "owner_id": f"student-{n:05d}",
                            "worker_id": f"wkr-{n % 200:06x}", "from": source, "to": target,
                            "reason": "placed by the scheduler (best_fit)"}
                row = (seq, prev, base + timedelta(milliseconds=seq), f"lablet_instance.{target}",
                       f"{user} (apikey:lm_{n % 40:07d})", user, f"lm_{n % 40:07d}", "lablet_instance",
                       f"li-{seq:010x}", "lablet_instance.transition", True, "10.0.0.7", "",
                       f"{seq:032x}", metadata)
                prev = keyed_hash(row, keys.seal_key)
                copy.write_row((*row[:-1], json.dumps(row[-1]), keys.seal_id, prev))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditevent")
    return prev


VERIFY_SNIPPET = """
import json, resource, time
import django
django.setup()
from apps.audit.verify import chain_verify
t0 = time.perf_counter()
result = chain_verify()
elapsed = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"valid": result.valid, "total": result.total_events, "elapsed": elapsed,
                  "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}))
"""


def verify_in_fresh_process() -> dict:
    """chain_verify() in a new interpreter, so its peak RSS is the verification's own."""
    out = subprocess.run([sys.executable, "-c", VERIFY_SNIPPET], env=os.environ.copy(),
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"verification failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_rss() -> int:
    """Peak RSS of a fresh interpreter that only sets Django up (what the verification adds is on top)."""
    snippet = ("import resource; import django; django.setup(); "
               "import apps.audit.verify; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", snippet], env=os.environ.copy(), capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1])


def bench_verify(args) -> list[dict]:
    from apps.audit.chain import GENESIS_HASH

    empty_journal()
    results = []
    done, prev = 0, GENESIS_HASH
    for size in (args.events // 10, args.events):
        t0 = time.perf_counter()
        prev = seed(done + 1, size - done, prev)
        seeded = time.perf_counter() - t0
        print(f"  seeded events {done + 1:,} to {size:,} with COPY in {seeded:.1f} s", flush=True)
        done = size
        outcome = verify_in_fresh_process()
        if not outcome["valid"] or outcome["total"] != size:
            raise RuntimeError(f"verification of {size:,} events: {outcome}")
        outcome["size"] = size
        results.append(outcome)
        print(f"  verified {size:,} events in {outcome['elapsed']:.2f} s ({size / outcome['elapsed']:,.0f}/s; "
              f"the process used {outcome['cpu']:.1f} s of CPU, Django start-up included), "
              f"peak RSS {outcome['maxrss_kb'] / 1024:.0f} MB", flush=True)
    return results


# --------------------------------------------------------------------------- main

def main() -> int:
    args = parse_args()
    own_database = "DATABASE_URL" not in os.environ
    try:
        if own_database:
            os.environ["DATABASE_URL"] = pg_create(BENCH_DB)
        setup_audit_django()
        from django.conf import settings
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            sync_commit = cursor.fetchone()[0]
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0].split(" on ")[0]
        layer = settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[1]
        print(f"{version}, synchronous_commit={sync_commit}, channel layer {layer}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")

        print(f"1. appends: {args.writers} writer processes, {args.seconds:g} s, one transaction per event")
        appends = bench_appends(args)
        print(f"   {appends['appends']:,} appends in {appends['elapsed']:.1f} s = {appends['rate']:,.0f} appends/s "
              f"(per writer: {', '.join(f'{n:,}' for n in appends['per_writer'])}); chain verified, gapless "
              f"(goal >= 1,000/s: {'met' if appends['rate'] >= 1000 else 'NOT met'})")

        print(f"2. verification of {args.events:,} events (fresh process each time)")
        base = baseline_rss()
        verified = bench_verify(args)
        small, large = verified[0], verified[-1]
        print(f"   {large['size']:,} events verified in {large['elapsed']:.2f} s "
              f"(goal < 15 s: {'met' if large['elapsed'] < 15 else 'NOT met'}); peak RSS "
              f"{small['maxrss_kb'] / 1024:.0f} MB at {small['size']:,} and {large['maxrss_kb'] / 1024:.0f} MB at "
              f"{large['size']:,} (Django alone: {base / 1024:.0f} MB); load average now {os.getloadavg()[0]:.1f}")
        return 0
    finally:
        if own_database:
            pg_drop(BENCH_DB)


if __name__ == "__main__":
    run(main)
