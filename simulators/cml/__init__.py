"""A stateful CML controller simulator: the part of CML's `/api/v0` REST API that
virl2-client 2.10 uses, served over HTTP on 127.0.0.1 only (over HTTPS with `ssl_context=`, for tests of
certificate verification; clients of the plain-http simulator need CML_ALLOW_HTTP=true).

In tests::

    sim = CmlSimulator(max_nodes=4)          # port 0 = a free port
    sim.start()
    ... ClientLibrary(sim.url, sim.username, sim.password, allow_http=True) ...
    sim.set_faults(down=True)                # or POST {sim.url}/_sim/faults {"down": true}
    sim.stop()

As a process (for `make run`)::

    python -m simulators.cml --port 0 --print-url [--state-file var/sim/cml.json]

Each `CmlSimulator` object is one CML host with its own state: several workers can
point at one simulator, or each at its own. Labs and nodes live in memory (and, with `--state-file`, in a
JSON file that a restart reads back: simulators/cml/state.py) and move
like CML's: DEFINED_ON_CORE -> STARTED -> BOOTED (after `boot_delay` seconds, 0 in
tests) -> STOPPED -> wiped back to DEFINED_ON_CORE. The lab state is BOOTED once all
its nodes are. While a node runs, each tag `serial:<port>` on it is a device console on 127.0.0.1:<port>
(CML PATty, simulators/cml/patty.py), closed when the lab stops or goes. A start that would run more nodes than `max_nodes`, or any start while
the licence is expired, is refused with 400 as CML refuses it.

Control endpoints (no authentication, never faulted):
  GET/POST /_sim/faults  {"down", "down_mode" ("http_503"|"drop"), "slow" (seconds per request),
                          "license_expired", "auth_fail"}
  POST /_sim/config      {"boot_delay", "max_nodes", "cpu_percent" (null = computed from the nodes)}
  POST /_sim/reset       forget labs, tokens, faults, configuration and licence changes
  GET  /_sim/state       labs and node states, faults, licence, open console ports
"""

from .model import Faults, SimError
from .server import CmlSimulator

__all__ = ["CmlSimulator", "Faults", "SimError"]
