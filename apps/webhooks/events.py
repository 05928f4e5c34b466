"""Journal events as CloudEvents 1.0 (structured JSON mode), with the cloudevents SDK.

    lablet_instance.running  -> io.lablet.instance.running
    worker.stopped           -> io.lablet.worker.stopped
    session.promoted         -> io.lablet.session.promoted
    lablet_definition.synced -> io.lablet.definition.synced   (other resources: io.lablet.<resource>.<verb>)
"""

import fnmatch
import re

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from django.conf import settings

RESOURCE_NAMES = {"lablet_instance": "instance", "lablet_definition": "definition"}
ID_FIELDS = {"instance": "instance_id", "worker": "worker_id", "session": "session_id", "definition": "definition_id"}
TYPE_PATTERN = re.compile(r"^(\*|io\.lablet\.[a-z0-9_*-]+(\.[a-z0-9_*-]+)*)$")
EVENT_FIELDS = ("sequence_num", "event_hash", "timestamp", "event_type", "actor", "resource_type", "resource_id",
                "action", "success", "metadata")


def cloudevent_type(event_type: str) -> str:
    prefix, _, verb = event_type.partition(".")
    resource = RESOURCE_NAMES.get(prefix, prefix.removeprefix("lablet_"))
    return f"io.lablet.{resource}.{verb or 'changed'}"


def cloudevent_id(sequence_num: int) -> str:
    return f"evt-{sequence_num}"


def matches(patterns: list[str], ce_type: str) -> bool:
    """Empty: every type. Otherwise exact types or shell-style patterns (`io.lablet.instance.*`)."""
    return not patterns or any(fnmatch.fnmatchcase(ce_type, pattern) for pattern in patterns)


def cloudevent_data(event: dict) -> dict:
    """The `data` of the CloudEvent of one journal event (a dict of EVENT_FIELDS; `event_hash` when it has
    one), for webhooks and the live stream alike (apps.events.payload). The seed's ids come first, at the
    top level: every `io.lablet.instance.*` carries `instance_id`, `worker_id` and `cml_lab_id` (null when
    unknown: not placed yet, no lab yet); other resources their own id (`worker_id`, `session_id`,
    `definition_id`, else `resource_id`). The journal's richer fields follow."""
    ce_type = cloudevent_type(event["event_type"])
    resource = ce_type.split(".")[2]
    metadata = event["metadata"] or {}
    if resource == "instance":
        data = {"instance_id": event["resource_id"], "worker_id": metadata.get("worker_id"),
                "cml_lab_id": metadata.get("cml_lab_id")}
    else:
        data = {ID_FIELDS.get(resource, "resource_id"): event["resource_id"]}
    data.update({
        "resource_type": event["resource_type"],
        "resource_id": event["resource_id"],
        "action": event["action"],
        "actor": event["actor"],
        "event_type": event["event_type"],
        "sequence_num": event["sequence_num"],
    })
    if "event_hash" in event:
        data["event_hash"] = event["event_hash"]
    data["metadata"] = metadata
    return data


def cloudevent_body(event: dict) -> tuple[str, str, bytes]:
    """(id, type, body) of the structured-mode CloudEvent of one sealed journal event (a dict of EVENT_FIELDS)."""
    ce_type = cloudevent_type(event["event_type"])
    data = cloudevent_data(event)
    ce = CloudEvent(
        attributes={
            "specversion": "1.0",
            "type": ce_type,
            "source": settings.CLOUDEVENTS_SOURCE,
            "id": cloudevent_id(event["sequence_num"]),
            "time": event["timestamp"],
            "subject": event["resource_id"],
            "datacontenttype": "application/json",
        },
        data=data,
    )
    return ce.get_id(), ce_type, to_structured_event(ce).body
