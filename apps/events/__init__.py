"""Live events: SSE (`/api/events/stream`) and WebSocket (`/ws/events`) streams of the audit journal.

Each ASGI process tails the journal (apps/events/hub.py) and fans events out to its own subscribers;
docs/events.md describes the wire format, the filters, the permissions and the design.
"""

from apps.events.stats import STATS


def live_stats() -> dict:
    """This process's live-stream figures, for /metrics: connected SSE / WebSocket clients, the last
    delivery lag (seconds from the event's journal timestamp to its fan-out), and tail counters."""
    return dict(STATS)
