"""The one gateway to AWS EC2 (boto3). Plain data in and out, no ORM.

boto3 retries throttling and transient errors with backoff (botocore "standard" mode); what still
fails becomes an `Ec2Error` subclass that says whose fault it is (`caller_fault`).
"""

import logging
import threading
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

log = logging.getLogger(__name__)

MANAGED_TAG = "labmanager:managed"
WORKER_ID_TAG = "labmanager:worker-id"
PAGE_SIZE = 1000  # describe_instances' maximum: 500 workers are one call
# EC2 refusals that say "not here, not now" rather than "never": a launch tries the template's next zone
# or instance type (apps.workers.services.fleet.worker_launch).
CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InstanceLimitExceeded", "IncorrectInstanceState",
                            "Unsupported", "InsufficientHostCapacity", "InsufficientCapacity",
                            "VcpuLimitExceeded"})


class Ec2Error(Exception):
    """EC2 refused or failed. `code` is AWS's error code; `caller_fault` says a 4xx fits better than a 502."""

    status_code = 502
    caller_fault = False

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message)
        self.code = code


class Ec2NotFound(Ec2Error):
    status_code = 422
    caller_fault = True


class Ec2CapacityError(Ec2Error):
    status_code = 409
    caller_fault = True


class Ec2Unavailable(Ec2Error):
    """Throttled past the retries, unauthorised, timed out, unreachable: an upstream failure (502)."""


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    state: str
    instance_type: str = ""
    public_ip: str | None = None
    private_ip: str | None = None
    region: str = ""
    tags: dict = field(default_factory=dict)

    @property
    def worker_id(self) -> str:
        return self.tags.get(WORKER_ID_TAG, "")


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def _client(region: str):
    key = (region, settings.AWS_ENDPOINT_URL, settings.EC2_MAX_ATTEMPTS, settings.EC2_TIMEOUT_SECONDS)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                "ec2",
                region_name=region,
                endpoint_url=settings.AWS_ENDPOINT_URL or None,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": settings.EC2_MAX_ATTEMPTS},
                    connect_timeout=settings.EC2_TIMEOUT_SECONDS,
                    read_timeout=settings.EC2_TIMEOUT_SECONDS,
                ),
            )
        return _clients[key]


CALLS = {"count": 0}  # EC2 API calls made by this process (the benchmark reads it)


def _call(region: str, operation: str, **kwargs):
    CALLS["count"] += 1
    try:
        return getattr(_client(region), operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if code.startswith(("InvalidInstanceID", "InvalidAMIID", "InvalidInstanceType")):
            raise Ec2NotFound(f"EC2: {message}", code=code)
        if code in CAPACITY_CODES:
            raise Ec2CapacityError(f"EC2 refused ({code}): {message}", code=code)
        raise Ec2Unavailable(f"EC2 failed ({code or 'error'}): {message}", code=code)
    except BotoCoreError as exc:
        raise Ec2Unavailable(f"EC2 unreachable: {exc}", code=type(exc).__name__)


def _info(raw: dict, region: str) -> InstanceInfo:
    return InstanceInfo(
        instance_id=raw["InstanceId"],
        state=raw["State"]["Name"],
        instance_type=raw.get("InstanceType", ""),
        public_ip=raw.get("PublicIpAddress"),
        private_ip=raw.get("PrivateIpAddress"),
        region=region,
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
    )


def _describe(region: str, **kwargs) -> list[InstanceInfo]:
    out, token = [], None
    while True:
        page = _call(region, "describe_instances", **kwargs, **({"NextToken": token} if token else {}))
        for reservation in page.get("Reservations", []):
            out.extend(_info(raw, region) for raw in reservation.get("Instances", []))
        token = page.get("NextToken")
        if not token:
            return out


def ec2_describe(*, region: str, instance_id: str) -> InstanceInfo:
    found = _describe(region, InstanceIds=[instance_id])
    if not found:
        raise Ec2NotFound(f"EC2: instance {instance_id} not found in {region}", code="InvalidInstanceID.NotFound")
    return found[0]


@dataclass(frozen=True)
class InstanceTypeInfo:
    instance_type: str
    vcpus: int
    memory_mib: int
    instance_storage_gb: int | None  # local instance store, None when EBS-only


# DescribeInstanceTypes' answers, per (endpoint, region, type): an instance type's vCPUs and memory never
# change, so EC2 is asked once per process (at a worker's import or launch, never per placement).
_instance_types: dict[tuple[str, str, str], InstanceTypeInfo] = {}


def ec2_instance_type(*, region: str, instance_type: str) -> InstanceTypeInfo:
    """vCPUs and memory of an instance type, from EC2's own DescribeInstanceTypes (cached). Raises
    Ec2NotFound for a type EC2 does not know, Ec2Unavailable when EC2 cannot be asked."""
    key = (settings.AWS_ENDPOINT_URL, region, instance_type)
    found = _instance_types.get(key)
    if found is None:
        page = _call(region, "describe_instance_types", InstanceTypes=[instance_type])
        raw = next((t for t in page.get("InstanceTypes", []) if t.get("InstanceType") == instance_type), None)
        if raw is None:
            raise Ec2NotFound(f"EC2: instance type {instance_type} not found in {region}", code="InvalidInstanceType")
        storage = raw.get("InstanceStorageInfo") or {}
        found = _instance_types[key] = InstanceTypeInfo(
            instance_type=instance_type, vcpus=int(raw["VCpuInfo"]["DefaultVCpus"]),
            memory_mib=int(raw["MemoryInfo"]["SizeInMiB"]),
            instance_storage_gb=int(storage["TotalSizeInGB"]) if storage.get("TotalSizeInGB") else None)
    return found


def ec2_describe_managed(*, region: str) -> list[InstanceInfo]:
    """Every instance tagged `labmanager:managed=true` in the region, in pages of 1,000."""
    return _describe(region, Filters=[{"Name": f"tag:{MANAGED_TAG}", "Values": ["true"]}], MaxResults=PAGE_SIZE)


def ec2_describe_many(*, region: str, instance_ids: list[str]) -> tuple[list[InstanceInfo], list[str]]:
    """Describe instances by id in one call; returns (found, missing). Unknown ids do not fail the batch."""
    if not instance_ids:
        return [], []
    found = _describe(region, Filters=[{"Name": "instance-id", "Values": list(instance_ids)}])
    seen = {info.instance_id for info in found}
    return found, [i for i in instance_ids if i not in seen]


def ec2_tag(*, region: str, instance_id: str, worker_id: str) -> None:
    _call(region, "create_tags", Resources=[instance_id], Tags=_tags(worker_id))


def _tags(worker_id: str, name: str = "") -> list[dict]:
    tags = [{"Key": MANAGED_TAG, "Value": "true"}, {"Key": WORKER_ID_TAG, "Value": worker_id}]
    if name:
        tags.append({"Key": "Name", "Value": name})
    return tags


def ec2_launch(
    *,
    region: str,
    instance_type: str,
    worker_id: str,
    name: str,
    image_id: str = "",
    launch_template_id: str = "",
    subnet_id: str = "",
    availability_zone: str = "",
) -> InstanceInfo:
    """RunInstances for one worker. `subnet_id` (else settings.WORKER_SUBNET_ID) and `availability_zone`
    (Placement) say where; blank: wherever EC2 chooses."""
    kwargs = {
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": instance_type,
        "TagSpecifications": [{"ResourceType": "instance", "Tags": _tags(worker_id, name)}],
    }
    if launch_template_id:
        kwargs["LaunchTemplate"] = {"LaunchTemplateId": launch_template_id}
    if image_id:
        kwargs["ImageId"] = image_id
    if subnet_id or settings.WORKER_SUBNET_ID:
        kwargs["SubnetId"] = subnet_id or settings.WORKER_SUBNET_ID
    if availability_zone:
        kwargs["Placement"] = {"AvailabilityZone": availability_zone}
    if settings.WORKER_SECURITY_GROUP_IDS:
        kwargs["SecurityGroupIds"] = settings.WORKER_SECURITY_GROUP_IDS
    if settings.WORKER_KEY_NAME:
        kwargs["KeyName"] = settings.WORKER_KEY_NAME
    response = _call(region, "run_instances", **kwargs)
    return _info(response["Instances"][0], region)


def _state_change(region: str, operation: str, key: str, instance_id: str) -> str:
    response = _call(region, operation, InstanceIds=[instance_id])
    return response[key][0]["CurrentState"]["Name"]


def ec2_start(*, region: str, instance_id: str) -> str:
    return _state_change(region, "start_instances", "StartingInstances", instance_id)


def ec2_stop(*, region: str, instance_id: str) -> str:
    return _state_change(region, "stop_instances", "StoppingInstances", instance_id)


def ec2_terminate(*, region: str, instance_id: str) -> str:
    return _state_change(region, "terminate_instances", "TerminatingInstances", instance_id)


# --- security-group ingress rules (a lablet instance's direct console access) ---------------------------

INSTANCE_RULE_TAG = "labmanager:lablet-instance-id"


@dataclass(frozen=True)
class IngressRule:
    rule_id: str
    port: int
    cidr: str


def ec2_security_groups(*, region: str, instance_id: str) -> list[str]:
    """The ids of the security groups of an EC2 instance, in EC2's order."""
    page = _call(region, "describe_instances", InstanceIds=[instance_id])
    for reservation in page.get("Reservations", []):
        for raw in reservation.get("Instances", []):
            return [group["GroupId"] for group in raw.get("SecurityGroups", [])]
    raise Ec2NotFound(f"EC2: instance {instance_id} not found in {region}", code="InvalidInstanceID.NotFound")


def ec2_ingress_rules(*, region: str, group_id: str, owner: str) -> list[IngressRule]:
    """The ingress rules of `group_id` tagged as `owner`'s (a lablet instance's public id)."""
    rules, token = [], None
    filters = [{"Name": "group-id", "Values": [group_id]}, {"Name": f"tag:{INSTANCE_RULE_TAG}", "Values": [owner]}]
    while True:
        page = _call(region, "describe_security_group_rules", Filters=filters, **({"NextToken": token} if token else {}))
        for raw in page.get("SecurityGroupRules", []):
            if not raw.get("IsEgress"):
                rules.append(IngressRule(rule_id=raw["SecurityGroupRuleId"], port=int(raw["FromPort"]),
                                         cidr=raw.get("CidrIpv4") or raw.get("CidrIpv6") or ""))
        token = page.get("NextToken")
        if not token:
            return rules


def ec2_tagged_ingress_rules(*, region: str) -> dict[tuple[str, str], list[IngressRule]]:
    """Every ingress rule in the region tagged with a lablet instance, by (owner, group id): the reconcile's
    view of what EC2 holds, records or not."""
    found: dict[tuple[str, str], list[IngressRule]] = {}
    token = None
    while True:
        page = _call(region, "describe_security_group_rules", Filters=[{"Name": "tag-key", "Values": [INSTANCE_RULE_TAG]}],
                     **({"NextToken": token} if token else {}))
        for raw in page.get("SecurityGroupRules", []):
            owner = next((t["Value"] for t in raw.get("Tags", []) if t.get("Key") == INSTANCE_RULE_TAG), "")
            if owner and not raw.get("IsEgress"):
                found.setdefault((owner, raw["GroupId"]), []).append(IngressRule(
                    rule_id=raw["SecurityGroupRuleId"], port=int(raw["FromPort"]),
                    cidr=raw.get("CidrIpv4") or raw.get("CidrIpv6") or ""))
        token = page.get("NextToken")
        if not token:
            return found


def _permission(port: int, cidr: str, description: str) -> dict:
    ranges = ({"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": description}]} if ":" in cidr
              else {"IpRanges": [{"CidrIp": cidr, "Description": description}]})
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **ranges}


def ec2_ingress_open(*, region: str, group_id: str, owner: str, ports: list[int], cidr: str) -> list[int]:
    """Allow TCP to each of `ports` from `cidr` in `group_id`, one rule per port, described and tagged with
    `owner`. Idempotent: ports `owner` already has a rule for are skipped, and a rule EC2 already holds
    (InvalidPermission.Duplicate) counts as open. Returns the ports opened by this call."""
    have = {rule.port for rule in ec2_ingress_rules(region=region, group_id=group_id, owner=owner)
            if rule.cidr == cidr}
    opened = []
    for port in sorted(set(ports) - have):
        try:
            _call(region, "authorize_security_group_ingress", GroupId=group_id,
                  IpPermissions=[_permission(port, cidr, f"labmanager console {owner}")],
                  TagSpecifications=[{"ResourceType": "security-group-rule",
                                      "Tags": [{"Key": INSTANCE_RULE_TAG, "Value": owner}]}])
        except Ec2Unavailable as exc:
            if exc.code != "InvalidPermission.Duplicate":
                raise
            continue
        opened.append(port)
    return opened


def ec2_ingress_close(*, region: str, group_id: str, owner: str) -> list[int]:
    """Revoke every ingress rule of `group_id` tagged as `owner`'s. A rule or group already gone is fine.
    Returns the ports whose rules were revoked."""
    try:
        rules = ec2_ingress_rules(region=region, group_id=group_id, owner=owner)
    except Ec2Unavailable as exc:
        if exc.code == "InvalidGroup.NotFound":
            return []
        raise
    if not rules:
        return []
    try:
        _call(region, "revoke_security_group_ingress", GroupId=group_id,
              SecurityGroupRuleIds=[rule.rule_id for rule in rules])
    except Ec2Unavailable as exc:
        if exc.code not in ("InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound",
                            "InvalidGroup.NotFound"):
            raise
    return sorted(rule.port for rule in rules)
