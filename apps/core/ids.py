"""Public identifiers: a type prefix and 16 random hex characters (`worker-3f9c…`).

Database primary keys stay internal; these are what the API shows and accepts.
"""

import secrets


def public_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def worker_id() -> str:
    return public_id("worker")


def definition_id() -> str:
    return public_id("def")


def instance_id() -> str:
    return public_id("inst")
