"""A student's own link to one lablet instance (docs/api.md#student-links, docs/security.md#student-links).

Students have no account: an instructor (or the integration that booked the lab) makes a link whose token
is shown once; only its SHA-256 is stored (like API keys). The link opens the student page of that one
instance and nothing else. It stops working when it is revoked or rotated, when it expires (by default the
instance's timeslot end + STUDENT_LINK_GRACE_MINUTES, following extensions) and when the instance is
terminated. Created, rotated, revoked and used (first use, then at most once per
STUDENT_LINK_USE_JOURNAL_MINUTES) are journalled on the instance, never the token.

`student_link_instance(raw_token)` is the one question other code asks (the console lane's
`console_principal(scope)`): the instance the token opens now, or None.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.lablets.lifecycle import TERMINAL
from apps.lablets.models import LabletInstance, StudentLink
from apps.lablets.services.journal import instance_audit

TOKEN_PREFIX = "sl_"
ACTIVE, EXPIRED, REVOKED, ENDED = "active", "expired", "revoked", "ended"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token() -> str:
    """192 random bits, URL-safe (32 characters after the prefix)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def student_link_path(raw: str) -> str:
    return f"/s/{raw}"


def student_link_expires_at(link: StudentLink) -> datetime:
    """Its own expiry, or the instance's timeslot end + the grace (an extension moves it too)."""
    if link.expires_at is not None:
        return link.expires_at
    return link.instance.timeslot_end + timedelta(minutes=settings.STUDENT_LINK_GRACE_MINUTES)


def student_link_state(link: StudentLink, now: datetime | None = None) -> str:
    now = now or timezone.now()
    if link.revoked_at is not None:
        return REVOKED
    if link.instance.status in TERMINAL:
        return ENDED
    if student_link_expires_at(link) <= now:
        return EXPIRED
    return ACTIVE


def student_link_current(*, instance: LabletInstance) -> StudentLink | None:
    """The instance's unrevoked link (there is at most one), else its latest, else None."""
    links = StudentLink.objects.filter(instance=instance).select_related("instance")
    return links.filter(revoked_at__isnull=True).first() or links.first()


def _revoke_unrevoked(instance: LabletInstance, now: datetime) -> list[str]:
    unrevoked = list(StudentLink.objects.select_for_update().filter(instance=instance, revoked_at__isnull=True))
    StudentLink.objects.filter(pk__in=[link.pk for link in unrevoked]).update(revoked_at=now)
    return [link.prefix for link in unrevoked]


@transaction.atomic
def student_link_create(*, instance: LabletInstance, actor: str,
                        expires_at: datetime | None = None) -> tuple[StudentLink, str]:
    """A new link for the instance; an existing one is revoked (rotation). Returns (link, raw token): the
    token is in this answer only. Journalled `student_link.created` or `student_link.rotated`."""
    now = timezone.now()
    instance = LabletInstance.objects.select_related("definition", "worker").get(pk=instance.pk)
    replaced = _revoke_unrevoked(instance, now)
    raw = new_token()
    link = StudentLink.objects.create(instance=instance, token_hash=hash_token(raw), prefix=raw[:10],
                                      expires_at=expires_at, created_by=actor[:200])
    link.instance = instance
    verb = "rotated" if replaced else "created"
    instance_audit(instance, event_type=f"student_link.{verb}", actor=actor, action=f"student_link.{verb[:-1]}",
                   metadata={"prefix": link.prefix, "replaced": replaced,
                             "expires_at": student_link_expires_at(link).isoformat()})
    return link, raw


@transaction.atomic
def student_link_revoke(*, instance: LabletInstance, actor: str) -> int:
    """Revoke the instance's link (0 when it had none: nothing journalled)."""
    instance = LabletInstance.objects.select_related("definition", "worker").get(pk=instance.pk)
    revoked = _revoke_unrevoked(instance, timezone.now())
    if revoked:
        instance_audit(instance, event_type="student_link.revoked", actor=actor, action="student_link.revoke",
                       metadata={"prefix": revoked[0]})
    return len(revoked)


@dataclass(frozen=True)
class Resolved:
    link: StudentLink
    state: str

    @property
    def instance(self) -> LabletInstance:
        return self.link.instance


def student_link_resolve(raw_token: str) -> Resolved | None:
    """The link a token names, with its state; None for a token no link has (never made, or malformed)."""
    if not raw_token or not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 100:
        return None
    link = (StudentLink.objects.select_related("instance", "instance__definition", "instance__worker")
            .filter(token_hash=hash_token(raw_token)).first())
    return None if link is None else Resolved(link=link, state=student_link_state(link))


def student_link_instance(raw_token: str) -> LabletInstance | None:
    """The instance the token opens now (the link active: not revoked, expired or ended), else None."""
    found = student_link_resolve(raw_token)
    return found.instance if found is not None and found.state == ACTIVE else None


def student_link_actor(link: StudentLink) -> str:
    return f"student-link:{link.prefix}"


def student_link_record_use(*, link: StudentLink, address: str) -> bool:
    """Stamp the use; journal `student_link.used` at the first use and then at most once per
    STUDENT_LINK_USE_JOURNAL_MINUTES (a compare-and-swap on `use_journalled_at`: one process journals).
    Returns whether it journalled."""
    now = timezone.now()
    StudentLink.objects.filter(pk=link.pk).update(last_used_at=now)
    due = now - timedelta(minutes=settings.STUDENT_LINK_USE_JOURNAL_MINUTES)
    previous = link.use_journalled_at
    if previous is not None and previous > due:
        return False
    with transaction.atomic():
        claimed = StudentLink.objects.filter(pk=link.pk, use_journalled_at=previous).update(use_journalled_at=now)
        if not claimed:
            return False
        link.use_journalled_at = now
        instance_audit(link.instance, event_type="student_link.used", actor=student_link_actor(link),
                       action="student_link.use",
                       metadata={"prefix": link.prefix, "address": address, "first_use": previous is None})
    return True


def student_link_may_extend(instance: LabletInstance) -> bool:
    """The definition allows a longer slot than the instance has, and the instance is live."""
    from apps.lablets.lifecycle import EXTENDABLE

    booked = (instance.timeslot_end - instance.timeslot_start).total_seconds() / 60
    return instance.status in EXTENDABLE and booked < instance.definition.max_duration_minutes


def student_link_extend(*, link: StudentLink) -> LabletInstance:
    """The student's extend request: the existing extend service (its limits: the definition's max
    duration, the worker's room, the owner's other bookings), by STUDENT_LINK_EXTEND_MINUTES capped at the
    max duration. DomainErrors go to the caller."""
    from apps.lablets.services.instances import lablet_instance_extend

    instance = link.instance
    latest = instance.timeslot_start + timedelta(minutes=instance.definition.max_duration_minutes)
    new_end = min(instance.timeslot_end + timedelta(minutes=settings.STUDENT_LINK_EXTEND_MINUTES), latest)
    return lablet_instance_extend(instance=instance, actor=student_link_actor(link), timeslot_end=new_end)


def student_links_for_instances(*, instances: list[LabletInstance], actor: str,
                                rotate: bool) -> list[tuple[LabletInstance, StudentLink, str | None]]:
    """The class export (and the roster booking's include_links): per instance (link, raw token or None).
    An instance without an active link gets a new one; one with an active link keeps it (raw None: its
    URL cannot be shown again) unless `rotate`, which replaces every link."""
    rows = []
    for instance in instances:
        current = student_link_current(instance=instance)
        if current is not None and not rotate and student_link_state(current) == ACTIVE:
            rows.append((instance, current, None))
            continue
        link, raw = student_link_create(instance=instance, actor=actor)
        rows.append((instance, link, raw))
    return rows
