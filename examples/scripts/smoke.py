#!/usr/bin/env python
"""Smoke test of a remote-lab server with the Python client: queue for a session, wait until it is
active, bring up (or attach to) a topology, list its devices, release the lab, end the session.

It needs only the client distribution (clients/python): `pip install ./clients/python` into any
Python 3.11+ environment (`make setup` puts it into the project's .venv). From the repository root:

    BASE_URL=http://127.0.0.1:8000/api/remote-lab \\
        python examples/scripts/smoke.py examples/topologies/two-routers.yaml

Environment: BASE_URL (required), REMOTE_LAB_API_KEY or REMOTE_LAB_TOKEN (optional; anonymous
clients are accepted only from the networks the server allows, loopback by default),
REMOTE_LAB_TIMEOUT (seconds to wait for the session, default 600).
Exit status: 0 on success, 1 on an API error, 2 on bad usage.
"""

import os
import sys
from pathlib import Path

from labmanager_remote_lab import RemoteLabClient, RemoteLabError


def main(argv: list[str]) -> int:
    base_url = os.environ.get("BASE_URL")
    if not base_url or len(argv) != 2:
        print("usage: BASE_URL=http://HOST:PORT/api/remote-lab smoke.py TOPOLOGY.yaml", file=sys.stderr)
        return 2
    topology = Path(argv[1])
    timeout = float(os.environ.get("REMOTE_LAB_TIMEOUT", "600"))
    try:
        with RemoteLabClient(base_url, api_key=os.environ.get("REMOTE_LAB_API_KEY"),
                             token=os.environ.get("REMOTE_LAB_TOKEN")) as client:
            status = client.start(timeout=timeout)
            print(f"session {client.session_id} active (position {status.position})")
            lab = client.acquire(topology)
            print(f"lab {'reused' if lab.reused else 'started'}: {len(lab.devices)} device(s)")
            for device in lab.devices:
                print(f"  {device['name']}")
            client.release()
            print("released; ending the session")
    except RemoteLabError as exc:
        print(f"remote-lab error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot read the topology: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
