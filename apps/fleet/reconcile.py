"""The ledger against reality (the `fleet_reconcile` schedule, every minute): what LabManager believes runs on
its workers against what EC2 and CML report. docs/workers.md#reconciliation-with-ec2-and-cml.

1. Lost instances. An instance instantiating, running, collecting or grading whose worker is terminated or
   failed (the EC2 sync moves a worker whose EC2 instance vanished to terminated), or that is running,
   collecting or grading on a running worker whose CML answered the list of its labs without its lab, lost its
   lab: apps.lablets.services.lost decides (back to pending and placed again when the slot has not begun,
   otherwise ended as `lost: <cause>`), journals `lablet_instance.lost` (`io.lablet.instance.lost`), and the
   overview lists it under "Needs attention". Never judged lost: an instance an engine step holds (its lease
   runs), an instance still instantiating on a running worker (the engine imports its lab again), a worker
   whose CML did not answer (an error is not "the lab is gone"), a lab recorded after the list was taken.
2. Orphan labs. A lab on a running worker's CML that belongs to no lablet instance (by lab id, or titled with
   the public id of one that may have a lab), no session lab (or one being started, by its title), no session
   lab teardown, no definition's reference lab and no warm lab is an OrphanLab from the time it is first seen
   (`fleet.orphan_lab_found`); after FLEET_ORPHAN_LAB_GRACE_MINUTES (0: never) it is stopped, wiped and
   deleted on CML (`fleet.orphan_lab_removed`), checked once more just before. A lab that becomes known
   again, or leaves CML by other hands, is dropped from the list (`fleet.orphan_lab_cleared`).

Workers that share one CML controller under one account (the same URL and user: `make run`, the tests) are listed once.
CML calls run in threads with no transaction open; the decisions are taken in this thread.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.fleet.models import OrphanLab
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletDefinition, LabletInstance, WarmLab, WarmLabStatus
from apps.lablets.services.lost import lablet_instance_lost
from apps.sessions.models import LabStatus, LabTeardown, SessionLab
from apps.sessions.services.labs import lab_title
from apps.workers import cml
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services.cml import cml_credentials

log = logging.getLogger(__name__)
ACTOR = "system"

WITH_LAB = (S.INSTANTIATING, S.RUNNING, S.COLLECTING, S.GRADING)  # may hold a lab on its worker's CML
LAB_UP = (S.RUNNING, S.COLLECTING, S.GRADING)  # their lab must be on CML
WORKER_GONE = (WorkerStatus.TERMINATED, WorkerStatus.FAILED)
REMOVE_WAIT_SECONDS = 30.0  # stop and wipe of an orphan lab, each at most this long


def fleet_reconcile(*, now: datetime | None = None, actor: str = ACTOR) -> dict:
    """One pass; returns counts of what it found and did (the task's result, the logs)."""
    now = now or timezone.now()
    report: Counter = Counter()
    _lost_with_their_workers(now=now, actor=actor, report=report)
    workers = list(Worker.objects.filter(status=WorkerStatus.RUNNING, cml_service_status="available")
                   .order_by("pk"))
    held = _labs_held(workers)  # read before CML is asked: a lab recorded after the list is not judged
    listings = _list_labs(workers, report)
    _lost_labs(held, listings, now=now, actor=actor, report=report)
    _orphans(workers, listings, now=now, actor=actor, report=report)
    result = {key: count for key, count in report.items() if count}
    if result:
        log.info("fleet reconcile: %s", result)
    return result


# --- lost instances ---------------------------------------------------------------------------------

def _held_now(now: datetime) -> Q:
    """Rows an engine step holds (its lease runs): never judged in the middle of a step."""
    return Q(claimed_until__gt=max(now, timezone.now()))


def _judge(row: dict, *, cause: str, now: datetime, actor: str, report: Counter) -> None:
    try:
        outcome = lablet_instance_lost(instance_pk=row["pk"], cause=cause, status=row["status"],
                                       worker_id=row["worker_id"], cml_lab_id=row["cml_lab_id"], actor=actor, now=now)
    except Exception:  # noqa: BLE001 - one instance's trouble must not stop the pass
        log.exception("fleet reconcile: instance %s (%s)", row["pk"], cause)
        report["errors"] += 1
        return
    report[f"lost_{outcome}"] += 1


def _lost_with_their_workers(*, now: datetime, actor: str, report: Counter) -> None:
    rows = (LabletInstance.objects.filter(status__in=WITH_LAB, worker__status__in=WORKER_GONE)
            .exclude(_held_now(now)).order_by("pk")
            .values("pk", "status", "worker_id", "cml_lab_id", "worker__public_id", "worker__status"))
    for row in rows[:settings.LIFECYCLE_TICK_BATCH]:
        _judge(row, cause=f"worker {row['worker__public_id']} {row['worker__status']}", now=now, actor=actor,
               report=report)


def _labs_held(workers: list[Worker]) -> list[dict]:
    """The instances whose lab must be on their (running, CML available) worker's CML, as read now."""
    return list(LabletInstance.objects.filter(worker__in=[w.pk for w in workers], status__in=LAB_UP)
                .exclude(cml_lab_id="").values("pk", "status", "worker_id", "cml_lab_id"))


def _lost_labs(held: list[dict], listings: dict, *, now: datetime, actor: str, report: Counter) -> None:
    for row in held:
        labs = listings.get(row["worker_id"])
        if labs is None or row["cml_lab_id"] in labs:  # CML did not answer, or the lab is there
            continue
        _judge(row, cause=f"CML lab {row['cml_lab_id']} deleted", now=now, actor=actor, report=report)


# --- asking CML ---------------------------------------------------------------------------------------

def _list_labs(workers: list[Worker], report: Counter) -> dict[int, dict[str, str]]:
    """worker pk -> {lab id: title} for every worker whose CML answered; one request per controller and account
    (URL, user name, TLS verification): a CML user sees only its own labs unless an admin, so workers that
    share a controller under different accounts are listed apart."""
    by_key: dict[tuple, list[Worker]] = {}
    creds_of: dict[tuple, dict] = {}
    for worker in workers:
        creds = cml_credentials(worker)
        if creds is None:
            continue
        key = (creds["url"], creds["username"], creds["tls_verify"])
        by_key.setdefault(key, []).append(worker)
        creds_of.setdefault(key, creds)
    if not by_key:
        return {}
    keys = list(by_key)

    def listing(key: tuple):
        try:
            return cml.cml_lab_titles(**creds_of[key], timeout=settings.CML_TIMEOUT_SECONDS)
        except cml.CmlError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(settings.CML_HEALTH_CONCURRENCY, len(keys)))) as pool:
        answers = list(pool.map(listing, keys))
    listings = {}
    for key, answer in zip(keys, answers):
        if isinstance(answer, cml.CmlError):
            report["cml_errors"] += 1
            log.warning("fleet reconcile: CML at %s (as %s) did not list its labs: %s", key[0], key[1], answer)
            continue
        report["controllers_listed"] += 1
        for worker in by_key[key]:
            listings[worker.pk] = answer
    return listings


# --- orphan labs ----------------------------------------------------------------------------------

def _warm_lab_ids(ids: list[str]) -> set[str]:
    """Of `ids`, the labs of the warm pools that may still be on CML (not recycled yet)."""
    return set(WarmLab.objects.filter(cml_lab_id__in=ids).exclude(status=WarmLabStatus.RECYCLED)
               .values_list("cml_lab_id", flat=True))


def known_labs(labs: dict[str, str]) -> set[str]:
    """Of `labs` (lab id -> title, as a CML listed them), the ids something in LabManager owns."""
    ids = list(labs)
    may_have_lab = ~Q(status=S.TERMINATED) | Q(cml_lab_removed_at__isnull=True, instantiating_at__isnull=False)
    known = set(LabletInstance.objects.filter(may_have_lab, cml_lab_id__in=ids).values_list("cml_lab_id", flat=True))
    known |= set(SessionLab.objects.filter(cml_lab_id__in=ids).values_list("cml_lab_id", flat=True))
    known |= set(LabTeardown.objects.filter(cml_lab_id__in=ids).values_list("cml_lab_id", flat=True))
    known |= set(LabletDefinition.objects.filter(reference_lab_id__in=ids).values_list("reference_lab_id", flat=True))
    known |= _warm_lab_ids(ids)
    titles = {title for lab_id, title in labs.items() if lab_id not in known and title}
    if titles:  # labs imported whose id is not recorded yet: an instance's (a warm lab's) is titled with its public id
        owned = set(LabletInstance.objects.filter(may_have_lab, public_id__in=titles)
                    .values_list("public_id", flat=True))
        owned |= set(WarmLab.objects.filter(public_id__in=titles).exclude(status=WarmLabStatus.RECYCLED)
                     .values_list("public_id", flat=True))
        owned |= {lab_title(token) for token in SessionLab.objects.filter(
            status=LabStatus.STARTING, start_token__isnull=False).values_list("start_token", flat=True)}
        known |= {lab_id for lab_id, title in labs.items() if title in owned}
    return known


def _journal(row: OrphanLab, *, event: str, actor: str, success: bool = True, error: str = "", **metadata) -> None:
    # An `audit` event on the live stream (operators and admins), `io.lablet.fleet.<event>` for webhooks.
    audit_record(event_type=f"fleet.{event}", actor=actor, resource_type="orphan_lab",
                 resource_id=row.cml_lab_id, action=f"fleet.{event}", success=success, error=error[:500],
                 metadata={"worker_id": row.worker.public_id, "cml_lab_id": row.cml_lab_id, "title": row.title,
                           "first_seen_at": row.first_seen_at.isoformat(), **metadata})


def _grace() -> timedelta | None:
    minutes = settings.FLEET_ORPHAN_LAB_GRACE_MINUTES
    return timedelta(minutes=minutes) if minutes > 0 else None


def _orphans(workers: list[Worker], listings: dict, *, now: datetime, actor: str, report: Counter) -> None:
    seen: set[int] = set()
    for worker in workers:
        labs = listings.get(worker.pk)
        if labs is None or id(labs) in seen:  # not answered, or another worker of the same CML has it
            continue
        seen.add(id(labs))
        try:
            _orphans_of(worker, labs, now=now, actor=actor, report=report)
        except Exception:  # noqa: BLE001 - one worker's trouble must not stop the pass
            log.exception("fleet reconcile: orphan labs of worker %s", worker.public_id)
            report["errors"] += 1


def _orphans_of(worker: Worker, labs: dict[str, str], *, now: datetime, actor: str, report: Counter) -> None:
    known = known_labs(labs)
    orphaned = {lab_id: title for lab_id, title in labs.items() if lab_id not in known}
    with transaction.atomic():
        open_rows = {row.cml_lab_id: row for row in
                     OrphanLab.objects.select_for_update().select_related("worker")
                     .filter(worker=worker, removed_at__isnull=True)}
        for lab_id, row in open_rows.items():
            if lab_id not in orphaned:
                _journal(row, event="orphan_lab_cleared", actor=actor,
                         reason="known again" if lab_id in labs else "gone from CML")
                row.delete()
                report["orphan_labs_cleared"] += 1
        for lab_id, title in orphaned.items():
            row = open_rows.get(lab_id)
            if row is None:
                row = OrphanLab.objects.create(worker=worker, cml_lab_id=lab_id, title=title[:255],
                                               first_seen_at=now, last_seen_at=now)
                _journal(row, event="orphan_lab_found", actor=actor,
                         grace_minutes=settings.FLEET_ORPHAN_LAB_GRACE_MINUTES)
                report["orphan_labs_found"] += 1
            else:
                OrphanLab.objects.filter(pk=row.pk).update(last_seen_at=now, title=title[:255])
    grace = _grace()
    if grace is None:
        return
    due = OrphanLab.objects.select_related("worker").filter(worker=worker, removed_at__isnull=True,
                                                            first_seen_at__lte=now - grace)
    for row in due:
        _remove(row, now=now, actor=actor, report=report)


def _remove(row: OrphanLab, *, now: datetime, actor: str, report: Counter) -> None:
    """Stop, wipe and delete one orphan lab on CML (unless it became known meanwhile), then record it."""
    creds = cml_credentials(row.worker)
    if creds is None:
        return
    try:  # once more, just before: a lab may have been adopted since the list was taken
        labs = cml.cml_lab_titles(**creds, timeout=settings.CML_TIMEOUT_SECONDS)
        if row.cml_lab_id in labs and row.cml_lab_id in known_labs({row.cml_lab_id: labs[row.cml_lab_id]}):
            return  # the next pass clears it from the list
        cml.cml_lab_delete(**creds, lab_id=row.cml_lab_id, force=True, missing_ok=True,
                           wait_timeout=REMOVE_WAIT_SECONDS, poll_interval=0.5, timeout=settings.CML_TIMEOUT_SECONDS)
    except cml.CmlError as exc:
        with transaction.atomic():
            OrphanLab.objects.filter(pk=row.pk).update(last_error=str(exc)[:500])
            if not row.last_error:  # journalled once, not every minute while CML refuses
                _journal(row, event="orphan_lab_removed", actor=actor, success=False, error=str(exc))
        report["orphan_labs_failed"] += 1
        return
    with transaction.atomic():
        OrphanLab.objects.filter(pk=row.pk).update(removed_at=now, last_error="")
        _journal(row, event="orphan_lab_removed", actor=actor,
                 grace_minutes=settings.FLEET_ORPHAN_LAB_GRACE_MINUTES)
    report["orphan_labs_removed"] += 1
