"""Two checkouts of LabManager side by side on one remote-lab endpoint: which change made it faster?

    git worktree add /tmp/lm-before <commit>        # the other checkout (uses this checkout's .venv)
    .venv/bin/python bench/sessions_compare.py --a /tmp/lm-before --b . "POST /session/heartbeat"

Starts one daphne process per checkout (bench/sessions.py's environment: PostgreSQL, a database of
its own each, DEBUG off, anonymous clients from loopback), creates sessions, then measures the endpoint
in interleaved rounds (A then B, B then A, ...; bench/sessions.py's `measure`, its warm-up also creates
and polls sessions) at 32 concurrent keep-alive clients, so that both see the same machine. Prints the median requests per second and server CPU per request of each. Endpoints:
"POST /session", "GET /session/{id}", "POST /session/heartbeat", "GET /healthz". Not part of
`make bench` (it needs a second checkout); figures from it are in docs/performance.md with the commits
compared. Stops the servers and drops the databases at the end.
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sessions as bench  # noqa: E402  bench/sessions.py

ENDPOINTS = (*bench.ENDPOINTS, bench.FLOOR)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("endpoint", choices=ENDPOINTS)
    parser.add_argument("--a", required=True, type=Path, help="a checkout (the baseline)")
    parser.add_argument("--b", default=Path("."), type=Path, help="another checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="per server and round")
    return parser.parse_args()


def start(name: str, root: Path) -> tuple[subprocess.Popen, int, str]:
    database = f"lm_bench_compare_{name.lower()}"
    bench.pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    bench.pg_admin(f'CREATE DATABASE "{database}"')
    env = bench.bench_env(True, root / "var" / "bench" / "session-files")
    env.update(DATABASE_URL=f"postgres://postgres@{bench.HOST}:5432/{database}", PYTHONPATH=str(root))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=env, check=True, timeout=600)
    here, bench.ROOT = bench.ROOT, root  # start_daphne runs in bench.ROOT
    try:
        proc, port = bench.start_daphne("labmanager.asgi:application", env)
    finally:
        bench.ROOT = here
    return proc, port, database


def main() -> int:
    args = parse_args()
    if not bench.pg_available():
        print("PostgreSQL does not answer on 127.0.0.1:5432", file=sys.stderr)
        return 1
    started = {}
    try:
        for name, root in (("A", args.a.resolve()), ("B", args.b.resolve())):
            started[name] = start(name, root)
        servers = {name: (port, proc.pid) for name, (proc, port, _) in started.items()}
        results = asyncio.run(bench.measure(servers, args, endpoints=(args.endpoint,)))
    finally:
        for proc, _, database in started.values():
            bench.stop(proc)
            bench.pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    medians = {}
    for name, root in (("A", args.a), ("B", args.b)):
        runs = results[(name, args.endpoint)]
        rates = [run["requests"] / run["elapsed"] for run in runs]
        cpu = statistics.median(run["server_cpu"] * run["elapsed"] / run["requests"] * 1000 for run in runs)
        medians[name] = statistics.median(rates)
        print(f"{name} ({root}): {args.endpoint}: median {medians[name]:.1f} req/s, {cpu:.2f} ms server "
              f"CPU a request; rounds: {' '.join(f'{r:.0f}' for r in rates)}")
    print(f"B / A: {medians['B'] / medians['A']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
