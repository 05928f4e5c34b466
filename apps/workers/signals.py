"""What the workers app tells, and asks, the apps that place work on workers (apps.lablets), which sit above
it (docs/architecture.md): workers knows nothing of what runs on a worker; the receivers answer."""

from django.dispatch import Signal

# Sent with `worker`, `actor` and `reason` when the worker can no longer host what is scheduled on it (it
# failed, was terminated, or was drained with force): the scheduler places that work elsewhere.
worker_withdrawn = Signal()

# Sent with `worker` to learn what runs there: each receiver returns a dict of what its live work holds on
# the worker, {"live": count, "cpu_cores": n, "memory_gb": n, "nodes": n}; the sender sums them.
worker_holdings = Signal()

HOLDINGS = ("live", "cpu_cores", "memory_gb", "nodes")


def holdings_of(worker) -> dict:
    """What the live work of every placing app holds on `worker`, summed (zeros when nothing does)."""
    total = dict.fromkeys(HOLDINGS, 0)
    for _receiver, held in worker_holdings.send(sender=type(worker), worker=worker):
        for name in HOLDINGS:
            total[name] += held.get(name, 0)
    return total
