"""`python -m simulators.cml --port 0 --print-url`: serve one simulated CML host until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import CmlSimulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a simulated CML controller on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--print-url", action="store_true", help="print the base URL as the first line of stdout")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="sim-password")
    parser.add_argument("--max-nodes", type=int, default=20)
    parser.add_argument("--boot-delay", type=float, default=5.0, help="seconds from STARTED to BOOTED")
    parser.add_argument("--cpu-count", type=int, default=16)
    parser.add_argument("--memory-gb", type=int, default=64)
    parser.add_argument("--license-tier", default="CML_Enterprise")
    parser.add_argument("--unregistered", action="store_true", help="start with the licence not registered")
    parser.add_argument("--state-file", help="keep labs, tokens and licence in this JSON file across restarts "
                        "(make run: var/sim/cml.json); without it the state goes with the process")
    args = parser.parse_args(argv)

    simulator = CmlSimulator(
        port=args.port, username=args.username, password=args.password, max_nodes=args.max_nodes,
        boot_delay=args.boot_delay, cpu_count=args.cpu_count, memory_gb=args.memory_gb,
        license_tier=args.license_tier, registered=not args.unregistered, state_file=args.state_file,
    ).start()
    if args.print_url:
        print(simulator.url, flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        done.wait()
    finally:
        simulator.stop()


if __name__ == "__main__":
    main()
