"""Two checkouts of LabManager side by side on one remote-lab endpoint: which change made it faster?

    git worktree add /tmp/lm-before <commit>        # the other checkout (uses this checkout's .venv)
    .venv/bin/python -m bench.sessions_compare --a /tmp/lm-before --b . "POST /session/heartbeat"

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

import asyncio
import contextlib
import os
import statistics
import sys
from pathlib import Path

from bench import sessions as bench
from bench.common import (BENCH_DIR, ROOT, ServeAll, argument_parser, cpu_ms_per_request, migrate, pg_available,
                          pg_create, pg_drop, requests_per_second, run)

ENDPOINTS = (*bench.ENDPOINTS, bench.FLOOR)
VENV_BIN = ROOT / ".venv" / "bin"


def parse_args():
    parser = argument_parser(__doc__, __spec__.name)
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


def prepare(name: str, root: Path, args, databases: list) -> dict:
    """The checkout's environment, on a new database of its own (appended to `databases`), migrated."""
    database = f"lm_bench_compare_{name.lower()}"
    databases.append(database)
    env = bench.bench_env(args.redis, args.log_level)
    env.update(DATABASE_URL=pg_create(database), PYTHONPATH=str(root),
               REDIS_PREFIX=f"lm-bench-compare-{name.lower()}",
               SESSION_STORAGE_DIR=str(root / "var" / "bench" / "session-files"),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")  # a worktree has no .venv of its own
    migrate(env, root)
    return env


def main() -> int:
    args = parse_args()
    if not pg_available():
        print("PostgreSQL does not answer on 127.0.0.1:5432", file=sys.stderr)
        return 1
    checkouts = (("A", args.a.resolve()), ("B", args.b.resolve()))
    databases = []
    try:
        with contextlib.ExitStack() as stack:
            servers = []
            for name, root in checkouts:
                env = prepare(name, root, args, databases)
                served = stack.enter_context(ServeAll(env, BENCH_DIR / f"compare-{name}.log", root))
                servers.append(bench.Server(name, served.port, served.pid, bench.API, {"X-Forwarded-Proto": "https"}))
            results = asyncio.run(bench.measure(servers, args, endpoints=(args.endpoint,)))
    finally:
        for database in databases:
            pg_drop(database)
    medians = {}
    for name, root in checkouts:
        runs = results[(name, args.endpoint)]
        rates = [requests_per_second([one]) for one in runs]
        cpu = statistics.median(cpu_ms_per_request([one]) for one in runs)
        medians[name] = statistics.median(rates)
        print(f"{name} ({root}): {args.endpoint}: median {medians[name]:.1f} req/s, {cpu:.2f} ms server "
              f"CPU a request; rounds: {' '.join(f'{r:.0f}' for r in rates)}")
    print(f"B / A: {medians['B'] / medians['A']:.2f}")
    return 0


if __name__ == "__main__":
    run(main)
