"""Checking the chain: stream the journal in sequence order, in chunks, and recompute every link.

Constant memory: each chunk is one keyset query (`sequence_num > last ORDER BY sequence_num LIMIT n`,
through the unique index), read into a list of tuples and dropped before the next. What it finds:

- an edited row: its event_hash no longer matches its content (or its prev_hash was edited);
- a deleted row: a gap in the sequence (or, if the sequence was renumbered, a prev_hash mismatch);
- reordered rows (sequence numbers or contents swapped): a prev_hash mismatch at the first moved row;
- an inserted row: a hash or prev_hash mismatch where it was put in.

`first_tampered` is the first sequence number at which the chain breaks: for a deleted row, the
missing number. What a chain alone cannot show is a forged tail (rows appended, or the last rows cut
off, by someone who recomputes the hashes): compare `chain_root_hash` with a root you kept elsewhere
(GET /api/audit/chain-root) for that. docs/audit.md.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from apps.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash
from apps.audit.models import AuditEvent
from apps.audit.services import chain_head

CHUNK = 10_000


@dataclass(frozen=True)
class Verification:
    valid: bool
    total_events: int
    first_tampered: int | None
    chain_root_hash: str | None
    verified_at: datetime
    reason: str = ""


def chain_verify(*, chunk_size: int = CHUNK, progress: Callable[[int, int], None] | None = None) -> Verification:
    """Verify the sealed chain from its first event up to the head as it is when this starts (events
    sealed meanwhile are left for the next verification). `progress(done, total)` after each chunk."""
    upto, root = chain_head()
    rows_of = (
        AuditEvent.objects.filter(sequence_num__isnull=False, sequence_num__lte=upto)
        .order_by("sequence_num")
        .values_list(*HASHED_FIELDS, "event_hash")
    )
    expected, prev, last, checked = 1, GENESIS_HASH, 0, 0
    first_tampered, reason = None, ""
    while first_tampered is None and last < upto:
        rows = list(rows_of.filter(sequence_num__gt=last)[:chunk_size])
        if not rows:
            break
        for row in rows:
            sequence = row[0]
            if sequence != expected:
                first_tampered, reason = expected, f"event {expected} is missing (the next event is {sequence})"
            elif row[1] != prev:
                first_tampered, reason = sequence, f"event {sequence}: prev_hash is not the hash of event {sequence - 1}"
            elif event_hash(row[:-1]) != row[-1]:
                first_tampered, reason = sequence, f"event {sequence}: event_hash does not match its content"
            else:
                prev, expected = row[-1], sequence + 1
                continue
            break
        checked += len(rows)
        last = rows[-1][0]
        if progress:
            progress(min(checked, upto), upto)
    if first_tampered is None and expected != upto + 1:
        first_tampered, reason = expected, f"event {expected} is missing (the chain ends at {expected - 1})"
    total = upto if first_tampered is None else rows_of.count()
    return Verification(
        valid=first_tampered is None,
        total_events=total,
        first_tampered=first_tampered,
        chain_root_hash=root if upto else None,
        verified_at=timezone.now(),
        reason=reason,
    )
