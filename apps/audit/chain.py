"""The hash chain, as pure functions: the canonical serialisation of an event and its keyed hash.

No database access here: services.py seals, verify.py checks, both through these functions, and the
data migration that chained the rows written before the chain existed uses them too. Both hash the
values as they read back from the database, so what a backend does to a value on the way in (jsonb
reordering keys, inet compressing an IPv6 address) cannot make a sound row look tampered. Changing
anything in this file changes every hash: treat it as a wire format.

    event_hash = hmac_sha256(key, canonical(event)).hexdigest()   # keyed_hash(): every row sealed now
    event_hash = sha256(canonical(event)).hexdigest()             # event_hash(): rows sealed before the key
    canonical(event) = json.dumps(
        {every field of HASHED_FIELDS, timestamp as UTC ISO 8601 with microseconds},
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    ).encode()

`canonical()` writes exactly those bytes without building the dict and encoding it whole: the keys in
sorted order, each value through the json module's own C encoders (verification hashes a million events:
this halves its cost). tests/audit/test_chain.py checks it against the json.dumps form above.

The key comes from outside the database (apps/audit/keys.py): whoever can only write the table cannot
compute a row's hash. Each row names the key that sealed it by `chain_key_id` (KEY_ID_LABEL below; empty:
plain SHA-256, a row sealed before the chain was keyed). docs/audit.md#what-the-chain-proves.
"""

import hashlib
import hmac
import json
import re
from datetime import datetime, timezone
from json.encoder import c_make_encoder, encode_basestring_ascii

GENESIS_HASH = "0" * 64
PLAIN = ""  # the chain_key_id of a row sealed with plain SHA-256, before the chain was keyed
# Domain separation: a key's public id, the key derived from SECRET_KEY, an anchor's MAC.
KEY_ID_LABEL = b"labmanager.audit-chain.key-id\0"
DERIVED_KEY_LABEL = b"labmanager.audit-chain\0"
ANCHOR_LABEL = b"labmanager.audit-anchor\0"

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

_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
if c_make_encoder is not None:
    # The encoder json.dumps builds on every call, built once (no circular-reference check: values come
    # from the database).
    _encode = c_make_encoder(None, _JSON.default, encode_basestring_ascii, None, ":", ",", True, False, True)

    def _dumps(value) -> str:
        return "".join(_encode(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _dumps = _JSON.encode
_sha256 = hashlib.sha256
_TIMESTAMP = HASHED_FIELDS.index("timestamp")
# ('{"action":', index of action in HASHED_FIELDS), (',"actor":', ...), ... in sorted key order.
_KEYS = tuple(
    (("{" if n == 0 else ",") + encode_basestring_ascii(HASHED_FIELDS[i]) + ":", i)
    for n, i in enumerate(sorted(range(len(HASHED_FIELDS)), key=HASHED_FIELDS.__getitem__))
)


def canonical_timestamp(value: datetime) -> str:
    """UTC, ISO 8601, always six fractional digits: `2026-11-22T07:23:00.000000+00:00`."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _value(value) -> str:
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    return _dumps(value)


def canonical(row: tuple) -> bytes:
    """The canonical serialisation of one event given as a tuple in HASHED_FIELDS order (items after
    those are ignored). The timestamp may be a datetime or already its canonical_timestamp() text (as
    verify reads it from PostgreSQL)."""
    values = list(row)
    if not isinstance(values[_TIMESTAMP], str):
        values[_TIMESTAMP] = canonical_timestamp(values[_TIMESTAMP])
    return ("".join([key + _value(values[i]) for key, i in _KEYS]) + "}").encode()


def event_hash(row: tuple) -> str:
    """Plain SHA-256 (hex) of one event given as a tuple in HASHED_FIELDS order: the rows sealed before the
    chain was keyed (and the data migration that first chained the journal)."""
    return _sha256(canonical(row)).hexdigest()


_hmac_digest = hmac.digest


def keyed_hash(row: tuple, key: bytes) -> str:
    """HMAC-SHA256 (hex) of one event given as a tuple in HASHED_FIELDS order, keyed by `key`."""
    return _hmac_digest(key, canonical(row), "sha256").hex()


def key_id(key: bytes) -> str:
    """A key's public name, stored in the rows it sealed: 16 hex digits of a labelled SHA-256 of it."""
    return _sha256(KEY_ID_LABEL + key).hexdigest()[:16]


def derived_key(secret: str) -> bytes:
    """The chain key derived from a SECRET_KEY (used when AUDIT_CHAIN_KEY is not set)."""
    return _sha256(DERIVED_KEY_LABEL + secret.encode()).digest()


def anchor_mac(*, sequence_num: int, event_hash: str, anchored_at: str, key_id: str, key: bytes) -> str:
    """HMAC-SHA256 (hex) of an anchor's fields: whoever can write the anchor store but lacks the key
    cannot make up an anchor."""
    message = ANCHOR_LABEL + _JSON.encode({"anchored_at": anchored_at, "event_hash": event_hash,
                                           "key_id": key_id, "sequence_num": sequence_num}).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


_API_KEY_ACTOR = re.compile(r"^(?:(?P<user>.+?) \()?apikey:(?P<prefix>[^)\s]+)\)?$")
NON_USER_ACTORS = frozenset({"", "system", "anonymous"})


def parse_actor(actor: str) -> tuple[str | None, str]:
    """`alice` -> ("alice", ""); `alice (apikey:lm_ab12cd)` -> ("alice", "lm_ab12cd");
    `apikey:lm_ab12cd` -> (None, "lm_ab12cd"); `system` -> (None, "")."""
    match = _API_KEY_ACTOR.match(actor)
    if match:
        return match.group("user") or None, match.group("prefix")
    return (None if actor in NON_USER_ACTORS else actor), ""
