"""django-q2 entry points of the audit journal: call services."""

import logging

from apps.audit.anchors import anchors_configured
from apps.audit.services import SYSTEM_ACTOR, audit_anchor

log = logging.getLogger(__name__)


def audit_anchor_tick() -> int | None:
    """The `audit_anchor` schedule: anchor the head of the chain outside the database when a store is
    configured (AUDIT_ANCHOR_DIR, AUDIT_ANCHOR_BUCKET); nothing otherwise. Returns the anchored sequence number."""
    if not anchors_configured():
        return None
    anchors = audit_anchor(actor=SYSTEM_ACTOR)  # a failure raises: the task is marked failed (and journalled)
    return anchors[0].sequence_num if anchors else 0
