"""The hash chain, as pure functions: the canonical serialisation of an event and its SHA-256.

No database access here: services.py seals, verify.py checks, both through these functions, and the
data migration that chained the rows written before the chain existed uses them too. Both hash the
values as they read back from the database, so what a backend does to a value on the way in (jsonb
reordering keys, inet compressing an IPv6 address) cannot make a sound row look tampered. Changing
anything in this file changes every hash: treat it as a wire format.

    event_hash = sha256(canonical(event)).hexdigest()
    canonical(event) = json.dumps(
        {every field of HASHED_FIELDS, timestamp as UTC ISO 8601 with microseconds},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    ).encode()
"""

import hashlib
import json
import re
from datetime import datetime, timezone

GENESIS_HASH = "0" * 64

# The columns of an event's content, in the order services and verify read them.
CONTENT_FIELDS = (
    "timestamp",
    "event_type",
    "actor",
    "user_id",
    "api_key_prefix",
    "resource_type",
    "resource_id",
    "action",
    "success",
    "ip_address",
    "error",
    "trace_id",
    "metadata",
)
# What goes into an event's hash: its place in the chain and its content.
HASHED_FIELDS = ("sequence_num", "prev_hash", *CONTENT_FIELDS)

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_sha256 = hashlib.sha256


def canonical_timestamp(value: datetime) -> str:
    """UTC, ISO 8601, always six fractional digits: `2026-11-22T07:23:00.000000+00:00`."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def event_hash(row: tuple) -> str:
    """SHA-256 (hex) of one event given as a tuple in HASHED_FIELDS order."""
    doc = dict(zip(HASHED_FIELDS, row))
    doc["timestamp"] = canonical_timestamp(doc["timestamp"])
    return _sha256(_dumps(doc).encode()).hexdigest()


_API_KEY_ACTOR = re.compile(r"^(?:(?P<user>.+?) \()?apikey:(?P<prefix>[^)\s]+)\)?$")
NON_USER_ACTORS = frozenset({"", "system", "anonymous"})


def parse_actor(actor: str) -> tuple[str | None, str]:
    """`alice` -> ("alice", ""); `alice (apikey:lm_ab12cd)` -> ("alice", "lm_ab12cd");
    `apikey:lm_ab12cd` -> (None, "lm_ab12cd"); `system` -> (None, "")."""
    match = _API_KEY_ACTOR.match(actor)
    if match:
        return match.group("user") or None, match.group("prefix")
    return (None if actor in NON_USER_ACTORS else actor), ""
