"""Two checkouts of LabManager side by side on one remote-lab endpoint: which change made it faster?

    git worktree add /tmp/lm-before <commit>        # the other checkout (uses this checkout's .venv)
    .venv/bin/python bench/sessions_compare.py --a /tmp/lm-before --b . "POST /session/heartbeat"

Starts each checkout with its own production command line, `bin/serve all` (nginx, gunicorn with its default
processes, daphne; bench/sessions.py's environment: PostgreSQL, a database of its own each, Redis,
settings_production, anonymous clients from loopback), then measures the endpoint in interleaved rounds
(A then B, B then A, ...; bench/sessions.py's `measure`, whose warm-up also creates and polls sessions) at
32 concurrent keep-alive clients, so that both see the same machine. Prints the median requests per second
and server CPU per request (all processes of each bin/serve) of each. Endpoints: "POST /session",
"GET /session/{id}", "POST /session/heartbeat", "GET /healthz". Both checkouts must have bin/serve (commit
84a0868 and later). Not part of `make bench` (it needs a second checkout). Stops the servers and drops the
databases at the end.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sessions as bench  # noqa: E402  bench/sessions.py
from common import ServeAll  # noqa: E402

ENDPOINTS = (*bench.ENDPOINTS, bench.FLOOR)
VENV_BIN = bench.ROOT / ".venv" / "bin"


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
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    return parser.parse_args()


def prepare(name: str, root: Path, args) -> tuple[dict, str]:
    database = f"lm_bench_compare_{name.lower()}"
    bench.pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    bench.pg_admin(f'CREATE DATABASE "{database}"')
    env = bench.bench_env(args.redis, args.log_level)
    env.update(DATABASE_URL=f"postgres://postgres@{bench.HOST}:5432/{database}", PYTHONPATH=str(root),
               REDIS_PREFIX=f"lm-bench-compare-{name.lower()}",
               SESSION_STORAGE_DIR=str(root / "var" / "bench" / "session-files"),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")  # a worktree has no .venv of its own
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=root, env=env, check=True, timeout=600)
    return env, database


def main() -> int:
    args = parse_args()
    if not bench.pg_available():
        print("PostgreSQL does not answer on 127.0.0.1:5432", file=sys.stderr)
        return 1
    checkouts = (("A", args.a.resolve()), ("B", args.b.resolve()))
    databases = []
    try:
        with contextlib.ExitStack() as stack:
            servers = []
            for name, root in checkouts:
                env, database = prepare(name, root, args)
                databases.append(database)
                served = stack.enter_context(ServeAll(env, bench.BENCH_DIR / f"compare-{name}.log", root))
                servers.append(bench.Server(name, served.port, served.pid, bench.API, {"X-Forwarded-Proto": "https"}))
            results = asyncio.run(bench.measure(servers, args, endpoints=(args.endpoint,)))
    finally:
        for database in databases:
            bench.pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    medians = {}
    for name, root in checkouts:
        runs = results[(name, args.endpoint)]
        rates = [run["requests"] / run["elapsed"] for run in runs]
        cpu = statistics.median(run["server_cpu"] / run["requests"] * 1000 for run in runs)
        medians[name] = statistics.median(rates)
        print(f"{name} ({root}): {args.endpoint}: median {medians[name]:.1f} req/s, {cpu:.2f} ms server "
              f"CPU a request; rounds: {' '.join(f'{r:.0f}' for r in rates)}")
    print(f"B / A: {medians['B'] / medians['A']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
