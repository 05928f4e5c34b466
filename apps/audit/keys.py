"""The keys of the audit chain, from the environment: never stored in the database.

AUDIT_CHAIN_KEY: one or more secrets, comma-separated; the first seals, all verify (rotation: put the new
key first and keep the old ones). Unset, the key is derived from SECRET_KEY with a label of its own
(apps/audit/chain.py: derived_key): SECRET_KEY then protects the journal, and the production profile's
deployment check warns (apps/audit/checks.py). Keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS
always verify, ranked after the configured keys: the rows sealed before AUDIT_CHAIN_KEY was set still verify.

Each key is known by its `key_id` (chain.key_id), stored in the rows it sealed. A key's rank is its
place in that list (0: the sealing key): along the chain, ranks never go up (an event sealed with an
older key after one sealed with a newer key is refused by the verification).
"""

from dataclasses import dataclass

from django.conf import settings

from apps.audit.chain import derived_key, key_id


@dataclass(frozen=True)
class ChainKeys:
    seal_id: str  # key id of the key that seals new events
    seal_key: bytes
    by_id: dict[str, bytes]  # every key that verifies, by key id
    rank: dict[str, int]  # key id -> place in the list (0: the sealing key)
    derived: bool  # the sealing key is derived from SECRET_KEY (AUDIT_CHAIN_KEY unset)


_cache: tuple[tuple, ChainKeys] | None = None


def chain_keys() -> ChainKeys:
    """The keys as the settings say now (computed once per set of settings: the seal calls this after
    every commit)."""
    global _cache
    configured = tuple(key.strip() for key in settings.AUDIT_CHAIN_KEY if key.strip())
    source = (configured, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))
    cached = _cache
    if cached is not None and cached[0] == source:
        return cached[1]
    keys = [key.encode() for key in configured]
    keys += [derived_key(secret) for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)]
    by_id, rank = {}, {}
    for key in keys:
        name = key_id(key)
        if name not in by_id:
            by_id[name], rank[name] = key, len(rank)
    first = keys[0]
    result = ChainKeys(seal_id=key_id(first), seal_key=first, by_id=by_id, rank=rank, derived=not configured)
    _cache = (source, result)
    return result
