"""What a live event looks like on the wire: its SSE name, its CloudEvents-like type, its JSON (docs/events.md)."""

import json

from apps.webhooks.events import cloudevent_data

# resource_type -> the named SSE event (the EventSource listener name).
NAMED_EVENTS = {
    "worker": "worker_status",
    "lablet_instance": "lablet_instance_status",
    "session": "session_status",
}
DEFAULT_NAME = "audit"
# event_type prefix -> CloudEvents type prefix (the seed's io.lablet.instance.*; the rest io.lablet.<entity>.*).
CLOUD_PREFIXES = {
    "lablet_instance.": "io.lablet.instance.",
    "lablet_definition.": "io.lablet.definition.",
    "worker.": "io.lablet.worker.",
    "session.": "io.lablet.session.",
}
# The journal columns a live event is built from (one values() query; never ip_address).
COLUMNS = ("sequence_num", "timestamp", "event_type", "actor", "resource_type", "resource_id", "action",
           "success", "error", "metadata")


def named_event(resource_type: str) -> str:
    return NAMED_EVENTS.get(resource_type, DEFAULT_NAME)


def cloudevent_type(event_type: str) -> str:
    """`lablet_instance.scheduled` -> `io.lablet.instance.scheduled`, `worker.running` -> `io.lablet.worker.running`."""
    for prefix, cloud in CLOUD_PREFIXES.items():
        if event_type.startswith(prefix):
            return cloud + event_type[len(prefix):]
    return "io.lablet." + event_type


class LiveEvent:
    """One sealed journal row, ready to send. The JSON and the SSE frame are built once, for all subscribers."""

    __slots__ = ("sequence", "event_type", "resource_type", "resource_id", "metadata", "row", "name",
                 "timestamp", "owner_pk", "_json", "_frame")

    def __init__(self, row: dict, *, owner_pk: int | None = None):
        self.row = row
        self.sequence = row["sequence_num"]
        self.event_type = row["event_type"]
        self.resource_type = row["resource_type"]
        self.resource_id = row["resource_id"]
        self.metadata = row["metadata"] or {}
        self.timestamp = row["timestamp"]
        self.name = named_event(self.resource_type)
        self.owner_pk = owner_pk  # the user an instructor must be to see it (instance creator, session owner)
        self._json = None
        self._frame = None

    @property
    def worker_id(self) -> str | None:
        if self.resource_type == "worker":
            return self.resource_id
        return self.metadata.get("worker_id")

    @property
    def instance_id(self) -> str | None:
        if self.resource_type == "lablet_instance":
            return self.resource_id
        return self.metadata.get("instance_id")

    def payload(self) -> dict:
        row = self.row
        return {
            "id": self.sequence,
            "sequence": self.sequence,
            "specversion": "1.0",
            "type": cloudevent_type(self.event_type),
            "source": f"/labmanager/{self.resource_type}",
            "subject": self.resource_id,
            "event": self.name,
            "event_type": self.event_type,
            "resource": {"type": self.resource_type, "id": self.resource_id},
            "action": row["action"],
            "actor": row["actor"],
            "success": row["success"],
            "error": row["error"],
            "metadata": self.metadata,
            "timestamp": self.timestamp.isoformat(),
            "data": cloudevent_data(row),  # the webhooks' CloudEvent `data` (instance_id, worker_id, cml_lab_id, ...)
        }

    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.payload(), separators=(",", ":"), default=str)
        return self._json

    def sse_frame(self) -> bytes:
        if self._frame is None:
            self._frame = f"id: {self.sequence}\nevent: {self.name}\ndata: {self.json()}\n\n".encode()
        return self._frame
