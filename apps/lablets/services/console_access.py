"""Direct console access for students: EC2 security-group ingress rules (docs/workers.md#direct-console-access).

By default a lab's console ports are reached through LabManager only. A definition with
`direct_console_access` and an instance with a `student_cidr` get, while the instance is RUNNING (and while it
collects or grades), one ingress rule per allocated console port (TCP, that port only, from the student's
range) in the first security group of the worker's EC2 instance, described and tagged with the instance's
public id (`labmanager:lablet-instance-id`). The teardown's first step revokes exactly those rules; the
lifecycle tick's reconcile opens what a failed attempt left closed and closes what an instance no longer
running left open, recorded or found in EC2 by its tag (`console_access_sweep`). Every EC2 call is outside a transaction; `console_access` (what was opened) is written
here only, journalled `lablet_instance.console_access_opened` / `_closed` with the ports and the range.
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings
from django.db import transaction

from apps.core.errors import ValidationFailed
from apps.lablets.models import ConsolePort, LabletDefinition, LabletInstance
from apps.lablets.models import InstanceStatus as S
from apps.lablets.services.journal import instance_audit
from apps.workers import ec2
from apps.workers.models import Worker

log = logging.getLogger("apps.lablets.console_access")

OPEN_STATES = (S.RUNNING, S.COLLECTING, S.GRADING)  # the lab runs: its rules stay


def student_cidr_clean(value: str | None) -> str:
    """The student's address range as a network ('203.0.113.7' → '203.0.113.7/32'), '' for none. 422 for
    what is no IPv4/IPv6 range, and for the whole internet (a /0) unless DIRECT_CONSOLE_ALLOW_ANY_ADDRESS."""
    text = (value or "").strip()
    if not text:
        return ""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValidationFailed(f"'{text[:60]}' is not an IPv4 or IPv6 address range.",
                               errors={"student_cidr": ["Not an IPv4 or IPv6 address range (CIDR), e.g. "
                                                        "203.0.113.0/24 or 2001:db8::/48."]})
    if network.prefixlen == 0 and not settings.DIRECT_CONSOLE_ALLOW_ANY_ADDRESS:
        raise ValidationFailed("A student's address range may not be the whole internet.",
                               errors={"student_cidr": ["/0 opens the consoles to everyone; name the student's "
                                                        "range (DIRECT_CONSOLE_ALLOW_ANY_ADDRESS allows it)."]})
    return str(network)


def _load(pk: int) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker").get(pk=pk)


def wants_access(instance: LabletInstance) -> bool:
    return (instance.status == S.RUNNING and instance.definition.direct_console_access
            and bool(instance.student_cidr))


@transaction.atomic
def _record(pk: int, *, access: dict, event: str, actor: str, metadata: dict) -> None:
    instance = LabletInstance.objects.select_for_update(of=("self",)).select_related("definition", "worker").get(pk=pk)
    LabletInstance.objects.filter(pk=pk).update(console_access=access)
    instance_audit(instance, event_type=f"lablet_instance.{event}", actor=actor, action=f"lablet_instance.{event}",
                   metadata=metadata)


def console_access_open(*, instance_pk: int, actor: str) -> str:
    """Open the RUNNING instance's console ports to its student's range, when its definition allows direct
    access. Returns 'opened', 'open' (already recorded), 'none' (nothing to open) or 'failed' (EC2 refused or
    is unreachable: logged, the reconcile tries again)."""
    instance = _load(instance_pk)
    if not wants_access(instance):
        return "none"
    if instance.console_access:
        return "open"
    worker = instance.worker
    ports = sorted(ConsolePort.objects.filter(instance=instance).values_list("port", flat=True))
    if not ports or worker is None or not worker.aws_instance_id:
        return "none"
    try:
        groups = ec2.ec2_security_groups(region=worker.aws_region, instance_id=worker.aws_instance_id)
        if not groups:
            raise ec2.Ec2NotFound(f"EC2 instance {worker.aws_instance_id} has no security group")
        ec2.ec2_ingress_open(region=worker.aws_region, group_id=groups[0], owner=instance.public_id, ports=ports,
                             cidr=instance.student_cidr)
    except ec2.Ec2Error as exc:
        log.warning("console access: opening the ports of %s failed: %s", instance.public_id, exc)
        return "failed"
    access = {"region": worker.aws_region, "group_id": groups[0], "cidr": instance.student_cidr, "ports": ports}
    _record(instance_pk, access=access, event="console_access_opened", actor=actor, metadata=access)
    return "opened"


def console_access_close(*, instance_pk: int, actor: str) -> str:
    """Revoke the rules opened for an instance that no longer runs. Returns 'closed', 'none' (nothing is
    open, or the instance still runs) or 'failed' (logged, the reconcile tries again). A rule already gone
    is fine."""
    instance = _load(instance_pk)
    access = instance.console_access
    if not access or instance.status in OPEN_STATES:
        return "none"
    try:
        revoked = ec2.ec2_ingress_close(region=access["region"], group_id=access["group_id"],
                                        owner=instance.public_id)
    except ec2.Ec2Error as exc:
        log.warning("console access: closing the ports of %s failed: %s", instance.public_id, exc)
        return "failed"
    _record(instance_pk, access={}, event="console_access_closed", actor=actor,
            metadata={**access, "revoked": revoked})
    return "closed"


def _in_use() -> bool:
    """Some definition allows direct access, or some instance still has rules recorded: only then is EC2 asked."""
    return (LabletDefinition.objects.filter(direct_console_access=True).exists()
            or LabletInstance.objects.exclude(console_access={}).exists())


def console_access_sweep(*, actor: str) -> int:
    """Revoke the rules EC2 holds, in the workers' regions, for instances of this installation that no longer
    run, recorded or not (the record is lost when a process dies between EC2's answer and the database).
    Rules tagged with an id this database does not know are left alone (another installation's). Returns
    how many instances' rules were revoked; each is journalled `console_access_closed` with `swept: true`."""
    regions = (Worker.objects.exclude(aws_instance_id="").order_by().values_list("aws_region", flat=True)
               .distinct())
    swept = 0
    for region in list(regions):
        held = ec2.ec2_tagged_ingress_rules(region=region)
        owners = {owner for owner, _ in held}
        known = dict(LabletInstance.objects.filter(public_id__in=owners).values_list("public_id", "status"))
        for (owner, group_id), rules in held.items():
            if owner not in known or known[owner] in OPEN_STATES:
                continue
            revoked = ec2.ec2_ingress_close(region=region, group_id=group_id, owner=owner)
            pk = LabletInstance.objects.values_list("pk", flat=True).get(public_id=owner)
            _record(pk, access={}, event="console_access_closed", actor=actor,
                    metadata={"region": region, "group_id": group_id, "cidr": rules[0].cidr,
                              "ports": sorted(rule.port for rule in rules), "revoked": revoked, "swept": True})
            swept += 1
    return swept


def console_access_reconcile(*, actor: str, batch: int = 100) -> dict:
    """The lifecycle tick's pass: close the rules of instances no longer running (recorded, then whatever EC2
    still holds: `console_access_sweep`), open those of RUNNING direct-access instances that have none
    recorded (a failed or interrupted attempt). No EC2 call unless direct access is in use. Returns counts."""
    counts = {"console_access_closed": 0, "console_access_opened": 0, "console_access_swept": 0}
    if not _in_use():
        return {}
    stale = (LabletInstance.objects.exclude(console_access={}).exclude(status__in=OPEN_STATES)
             .order_by("pk").values_list("pk", flat=True)[:batch])
    for pk in list(stale):
        counts["console_access_closed"] += console_access_close(instance_pk=pk, actor=actor) == "closed"
    missing = (LabletInstance.objects.filter(status=S.RUNNING, definition__direct_console_access=True,
                                             console_access={})
               .exclude(student_cidr="").order_by("pk").values_list("pk", flat=True)[:batch])
    for pk in list(missing):
        counts["console_access_opened"] += console_access_open(instance_pk=pk, actor=actor) == "opened"
    try:
        counts["console_access_swept"] = console_access_sweep(actor=actor)
    except ec2.Ec2Error as exc:
        log.warning("console access: the sweep of security-group rules failed: %s", exc)
    return {key: count for key, count in counts.items() if count}
