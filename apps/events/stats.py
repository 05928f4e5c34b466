"""Per-process counters of the live streams, read by live_stats() (no Django imports here)."""

STATS = {
    "sse_clients": 0,
    "websocket_clients": 0,
    "last_delivery_lag_seconds": None,  # fan-out time minus the event's journal timestamp, last batch
    "last_sequence": None,  # last journal sequence number this process's tail has seen
    "tail_queries": 0,
    "events_fanned_out": 0,
    "dropped_slow_subscribers": 0,
}
