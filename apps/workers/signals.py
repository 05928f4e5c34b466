"""What the workers app tells, and asks, the apps that place work on workers (apps.lablets), which sit above
it (docs/architecture.md): workers knows nothing of what runs on a worker; the receivers act."""

from django.dispatch import Signal

# Sent with `worker`, `actor` and `reason` when the worker can no longer host what is scheduled on it (it
# failed, was terminated, or was drained with force): the scheduler places that work elsewhere.
worker_withdrawn = Signal()

# What runs on a worker, and will, is the capacity ledger's question: apps.workers.ledger.worker_bookings.
