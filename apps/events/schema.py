"""The SSE stream in the OpenAPI document. It is a plain async Django view (apps/events/stream.py),
which drf-spectacular does not see: this postprocessing hook (SPECTACULAR_SETTINGS) describes it."""

from apps.events.payload import NAMED_EVENTS

PATH = "/api/events/stream"
EXAMPLE = (
    'retry: 3000\n: connected\n\n'
    'id: 1042\nevent: worker_status\n'
    'data: {"id":1042,"sequence":1042,"specversion":"1.0","type":"io.lablet.worker.running",'
    '"source":"/labmanager/worker","subject":"wkr-1a2b3c","event":"worker_status","event_type":"worker.running",'
    '"resource":{"type":"worker","id":"wkr-1a2b3c"},"action":"worker.transition","actor":"system",'
    '"success":true,"error":"","metadata":{"from":"pending","to":"running"},'
    '"timestamp":"2026-11-22T07:23:00.123456+00:00"}\n\n'
    ': keep-alive\n\n'
)


def _problem(description: str, schemas: dict) -> dict:
    schema = {"$ref": "#/components/schemas/Problem"} if "Problem" in schemas else {"type": "object"}
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


def _security_of_other_operations(paths: dict) -> list | None:
    for operations in paths.values():
        for operation in operations.values():
            if isinstance(operation, dict) and operation.get("security"):
                return operation["security"]
    return None


def add_event_stream(result, generator, request, public):
    schemas = result.setdefault("components", {}).get("schemas", {})
    names = ", ".join(f"`{name}`" for name in [*NAMED_EVENTS.values(), "audit"])
    operation = {
        "operationId": "events_stream",
        "summary": "Live event stream (Server-Sent Events)",
        "description": (
            f"Every journal event, live, as named SSE events ({names}); the `id:` of each message is the "
            "journal sequence number, and a reconnect with `Last-Event-ID` replays what was missed before "
            "going live. A `: keep-alive` comment every LIVE_KEEPALIVE_SECONDS (15 s) when idle. Admins "
            "and operators receive every event; instructors `worker_status`, and the instance and session "
            "events of what they own. The same events over WebSocket: `/ws/events`. docs/events.md."
        ),
        "tags": ["events"],
        "parameters": [
            {"name": "worker_ids", "in": "query", "schema": {"type": "string"},
             "description": "Comma-separated worker ids: that worker's events and events naming it."},
            {"name": "instance_ids", "in": "query", "schema": {"type": "string"},
             "description": "Comma-separated lablet instance ids: that instance's events (an instructor's own only)."},
            {"name": "event_types", "in": "query", "schema": {"type": "string"},
             "description": "Comma-separated: event types (`worker.running`), prefixes (`lablet_instance.*`), "
                            "named events (`worker_status`) or CloudEvents types (`io.lablet.instance.running`)."},
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0},
             "description": "Resume after this sequence number (EventSource sends it when it reconnects)."},
            {"name": "last_event_id", "in": "query", "schema": {"type": "integer", "minimum": 0},
             "description": "The same as the Last-Event-ID header, for clients that cannot set headers."},
        ],
        "responses": {
            "200": {"description": "The stream (never ends on its own).",
                    "content": {"text/event-stream": {"schema": {"type": "string"}, "example": EXAMPLE}}},
            "400": _problem("Last-Event-ID is not a sequence number.", schemas),
            "401": _problem("Not authenticated.", schemas),
            "403": _problem("Your role does not allow this.", schemas),
        },
    }
    security = _security_of_other_operations(result.get("paths", {}))
    if security:
        operation["security"] = security
    result.setdefault("paths", {})[PATH] = {"get": operation}
    return result
