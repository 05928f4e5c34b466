"""The keys of the audit chain, from the environment: never stored in the database.

A key verifies an event only if that event is within the span the key sealed: whoever holds an old key
(or SECRET_KEY) and can write the database must not be able to re-seal the journal under it.

AUDIT_CHAIN_KEY: one or more secrets, comma-separated. The first seals new events and verifies any event.
Every other one is an old key, written `<key>@<the last event it sealed>`, and verifies events up to that
one only. Unset, the key is derived from SECRET_KEY with a label of its own (apps/audit/chain.py:
derived_key): SECRET_KEY then protects the journal, and the production profile's deployment check warns
(apps/audit/checks.py). Every other key derived from SECRET_KEY or SECRET_KEY_FALLBACKS (all of them, once
AUDIT_CHAIN_KEY is set; the fallbacks' when it is not) verifies events up to AUDIT_CHAIN_DERIVED_UNTIL
(default 0: none): the events sealed before AUDIT_CHAIN_KEY was set, or before SECRET_KEY was rotated.

Each key is known by its `key_id` (chain.key_id), stored in the rows it sealed. docs/audit.md#the-key.
"""

from dataclasses import dataclass

from django.conf import settings

from apps.audit.chain import derived_key, key_id


@dataclass(frozen=True)
class ChainKeys:
    seal_id: str  # key id of the key that seals new events
    seal_key: bytes
    by_id: dict[str, bytes]  # every key that verifies, by key id
    last: dict[str, int | None]  # key id -> the last event the key may have sealed (None: any, the sealing key)
    names: dict[str, tuple[str, str]]  # key id -> (where the key comes from, where its last event is set)
    derived: bool  # the sealing key is derived from SECRET_KEY (AUDIT_CHAIN_KEY unset)
    problems: tuple[str, ...] = ()  # AUDIT_CHAIN_KEY written wrong: the verification fails with these


_cache: tuple[tuple, ChainKeys] | None = None


def chain_keys() -> ChainKeys:
    """The keys as the settings say now (computed once per set of settings: the seal calls this after
    every commit)."""
    global _cache
    configured = tuple(key.strip() for key in settings.AUDIT_CHAIN_KEY if key.strip())
    derived_until = settings.AUDIT_CHAIN_DERIVED_UNTIL
    source = (configured, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS), derived_until)
    cached = _cache
    if cached is not None and cached[0] == source:
        return cached[1]
    keys: list[tuple[bytes, int | None, tuple[str, str]]] = []  # (key, its last event, its names)
    problems = []
    for place, entry in enumerate(configured, start=1):
        secret, at, until = entry.partition("@")
        key = secret.encode()
        if place == 1:
            keys.append((key, None, ("AUDIT_CHAIN_KEY's first key", "")))
            if at:
                problems.append("AUDIT_CHAIN_KEY's first key seals the new events: it takes no @<last event> "
                                "(docs/audit.md#the-key)")
        elif until.isdigit():
            keys.append((key, int(until), (f"AUDIT_CHAIN_KEY's key {place}", f"its @{until} in AUDIT_CHAIN_KEY")))
        else:  # unbounded, it would verify a journal re-sealed with it from end to end
            problems.append(f"AUDIT_CHAIN_KEY's key {place} (key id {key_id(key)}) must be written <key>@<the last "
                            f"event it sealed>: SELECT max(sequence_num) FROM audit_auditevent WHERE chain_key_id = "
                            f"'{key_id(key)}' (docs/audit.md#rotating-the-key)")
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    for n, secret in enumerate(secrets):
        sealing = not configured and n == 0  # AUDIT_CHAIN_KEY unset: the key derived from SECRET_KEY seals
        keys.append((derived_key(secret), None if sealing else derived_until,
                     ("derived from " + ("SECRET_KEY" if n == 0 else "SECRET_KEY_FALLBACKS"),
                      "" if sealing else "AUDIT_CHAIN_DERIVED_UNTIL")))
    by_id, last, names = {}, {}, {}
    for key, until, name in keys:
        ident = key_id(key)
        if ident not in by_id:  # listed twice: the first place counts
            by_id[ident], last[ident], names[ident] = key, until, name
    first = keys[0][0]
    result = ChainKeys(seal_id=key_id(first), seal_key=first, by_id=by_id, last=last, names=names,
                       derived=not configured, problems=tuple(problems))
    _cache = (source, result)
    return result
