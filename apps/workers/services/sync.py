"""The EC2 sync (worker_ec2_sync, the `ec2_sync` task): reconcile every worker with EC2 in batched
describe calls (never one call per worker)."""

import logging
from collections import defaultdict

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.workers import ec2
from apps.workers.models import Worker, WorkerStatus
from apps.workers.services.fleet import worker_apply_ec2_state, worker_import, worker_transition
from apps.core.awaited import enqueue
from apps.core.errors import DomainError

log = logging.getLogger(__name__)
ACTOR = "system"
EC2_SYNC_TASK = "apps.workers.tasks.ec2_sync"


def worker_ec2_sync(*, actor: str = ACTOR) -> dict:
    """One pass over every region that has workers. Per region: one paged describe of the instances
    tagged `labmanager:managed=true`, plus one describe by id for known workers missing from it.
    A failure in one region or on one worker is logged and the pass carries on."""
    summary = {"regions": 0, "ec2_calls": 0, "updated": 0, "imported": 0, "gone": 0, "errors": []}
    calls_before = ec2.CALLS["count"]
    live = Worker.objects.exclude(status=WorkerStatus.TERMINATED)
    by_region = defaultdict(list)
    for worker in live:
        by_region[worker.aws_region].append(worker)
    for region in sorted(set(by_region) | {settings.AWS_REGION}):
        summary["regions"] += 1
        try:
            _sync_region(region, by_region.get(region, []), actor=actor, summary=summary)
        except ec2.Ec2Error as exc:
            log.warning("ec2_sync: region %s failed: %s", region, exc)
            summary["errors"].append(f"{region}: {exc}")
    summary["ec2_calls"] = ec2.CALLS["count"] - calls_before
    return summary


def worker_ec2_sync_begin(*, actor: str) -> str:
    """Enqueue worker_ec2_sync (the admin's "Sync now"): it asks EC2 in every region. Returns the task's id."""
    return enqueue(EC2_SYNC_TASK, actor, task_name="ec2_sync-requested")


def _sync_region(region: str, workers: list[Worker], *, actor: str, summary: dict) -> None:
    managed = {info.instance_id: info for info in ec2.ec2_describe_managed(region=region)}
    known = {w.aws_instance_id: w for w in workers if w.aws_instance_id}
    missing = [iid for iid in known if iid not in managed]
    gone: list[str] = []
    if missing:
        found, gone = ec2.ec2_describe_many(region=region, instance_ids=missing)
        managed.update({info.instance_id: info for info in found})
    Worker.objects.filter(pk__in=[w.pk for w in known.values()]).update(last_ec2_sync_at=timezone.now())
    for instance_id, worker in known.items():
        try:
            if instance_id in gone:
                summary["gone"] += 1
                worker_transition(worker=worker, to=WorkerStatus.TERMINATED, actor=actor,
                                  reason="instance no longer exists in EC2")
                continue
            before = worker.status
            worker = worker_apply_ec2_state(worker=worker, info=managed[instance_id], actor=actor, fresh=True,
                                            reason=f"EC2 reports {managed[instance_id].state} (ec2_sync)")
            summary["updated"] += int(worker.status != before)
        except (DomainError, KeyError) as exc:
            log.warning("ec2_sync: worker %s: %s", worker.public_id, exc)
            summary["errors"].append(f"{worker.public_id}: {exc}")
    terminated_ids = set(
        Worker.objects.filter(aws_region=region, status=WorkerStatus.TERMINATED)
        .filter(Q(aws_instance_id__in=list(managed)))
        .values_list("aws_instance_id", flat=True)
    )
    for instance_id, info in managed.items():
        if instance_id in known or instance_id in terminated_ids or info.state in ("terminated", "shutting-down"):
            continue
        try:  # a tagged instance LabManager does not know: adopt it
            worker_import(actor=actor, aws_instance_id=instance_id, aws_region=region, info=info)
            summary["imported"] += 1
        except DomainError as exc:
            log.warning("ec2_sync: cannot import %s: %s", instance_id, exc)
            summary["errors"].append(f"{instance_id}: {exc.detail}")
