"""Direct console access for students: the worker's EC2 security group opens exactly an instance's console
ports to its student's range while it runs, and closes them at teardown (docs/workers.md#direct-console-access).

Real boto3 over HTTP to moto behind the fault-injecting EC2 simulator (tests/conftest.py), the CML simulator
for the labs; nothing is patched."""

from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from django.conf import settings
from django.utils import timezone

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import ConsolePort
from apps.lablets.services import lablet_instance_terminate
from apps.lablets.services.console_access import console_access_close, console_access_open
from apps.workers.services import worker_transition
from tests.lablets.engine_support import events, fresh, running_worker, scheduled, two_router_definition

pytestmark = pytest.mark.django_db

CIDR = "203.0.113.0/24"
INSTANCES = "/api/lablet-instances"


def aws():
    return boto3.client("ec2", region_name="us-west-2", endpoint_url=settings.AWS_ENDPOINT_URL,
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


@pytest.fixture
def group(ec2_sim):
    """A security group of its own for the worker's EC2 instance (other tests' instances share the default)."""
    ec2_sim.disarm()
    name = f"worker-{timezone.now().timestamp()}"
    group_id = aws().create_security_group(GroupName=name, Description="a CML worker")["GroupId"]
    yield group_id
    ec2_sim.disarm()


@pytest.fixture
def worker(cml, group):
    instance_id = aws().run_instances(ImageId=settings.WORKER_AMI_ID, InstanceType="m5zn.metal", MinCount=1,
                                      MaxCount=1, SecurityGroupIds=[group])["Instances"][0]["InstanceId"]
    return running_worker(aws_instance_id=instance_id)


def ingress(group_id) -> list[tuple]:
    """The group's ingress rules as (protocol, from port, to port, range, description), sorted."""
    rules = aws().describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return sorted((r["IpProtocol"], r["FromPort"], r["ToPort"], r.get("CidrIpv4") or r.get("CidrIpv6"),
                   r.get("Description", "")) for r in rules["SecurityGroupRules"] if not r["IsEgress"])


def running(worker, definition, **kwargs):
    instance = scheduled(worker, definition, **kwargs)
    lifecycle_tick()
    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    return instance


def ports_of(instance) -> list[int]:
    return sorted(ConsolePort.objects.filter(instance=instance).values_list("port", flat=True))


def expected(instance, cidr=CIDR) -> list[tuple]:
    return [("tcp", port, port, cidr, f"labmanager console {instance.public_id}") for port in ports_of(instance)]


def test_a_direct_access_instance_reaching_running_opens_exactly_its_ports_to_its_range(worker, group):
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)

    assert len(ports_of(instance)) == 2
    assert ingress(group) == expected(instance)
    assert instance.console_access == {"region": "us-west-2", "group_id": group, "cidr": CIDR,
                                       "ports": ports_of(instance)}
    assert "lablet_instance.console_access_opened" in events(instance)


def test_teardown_removes_the_rules_and_journals_it(worker, group):
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)
    ports = ports_of(instance)

    lifecycle_tick(now=instance.timeslot_end + timedelta(seconds=1))

    instance = fresh(instance)
    assert instance.status == "terminated"
    assert ingress(group) == []
    assert instance.console_access == {}
    from apps.audit.models import AuditEvent
    closed = AuditEvent.objects.get(resource_id=instance.public_id, event_type="lablet_instance.console_access_closed")
    assert closed.metadata["ports"] == ports and closed.metadata["revoked"] == ports
    assert closed.metadata["cidr"] == CIDR


def test_a_definition_without_direct_access_touches_no_security_group(worker, group, ec2_sim):
    since = len(ec2_sim.calls)
    instance = running(worker, two_router_definition(), student_cidr=CIDR)
    lifecycle_tick(now=instance.timeslot_end + timedelta(seconds=1))

    assert fresh(instance).status == "terminated"
    assert not [call for call in ec2_sim.calls[since:] if "Security" in call]
    assert ingress(group) == []


def test_an_ipv6_range_opens_ipv6_rules(worker, group):
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr="2001:db8::/48")

    assert ingress(group) == expected(instance, cidr="2001:db8::/48")


def test_opening_and_closing_again_is_idempotent(worker, group):
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)

    assert console_access_open(instance_pk=instance.pk, actor="tests") == "open"
    # the record lost (a process died between EC2 and the database): the reconcile opens nothing twice
    type(instance).objects.filter(pk=instance.pk).update(console_access={})
    report = lifecycle_tick()
    assert report.get("console_access_opened") == 1
    assert ingress(group) == expected(instance)

    # a rule removed by hand meanwhile is fine at teardown, and a second close finds nothing to do
    rule = aws().describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    first = next(r for r in rule["SecurityGroupRules"] if not r["IsEgress"])
    aws().revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[first["SecurityGroupRuleId"]])
    lifecycle_tick(now=instance.timeslot_end + timedelta(seconds=1))
    assert ingress(group) == []
    assert console_access_close(instance_pk=instance.pk, actor="tests") == "none"


def test_an_ec2_failure_at_running_is_retried_by_the_tick(worker, group, ec2_sim):
    ec2_sim.arm("AuthorizeSecurityGroupIngress", "RequestLimitExceeded")  # until disarmed
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)
    assert ingress(group) == [] and fresh(instance).console_access == {}
    ec2_sim.disarm()

    lifecycle_tick()

    assert ingress(group) == expected(instance)


def test_rules_of_an_instance_that_ended_without_teardown_are_removed_by_the_reconcile(worker, group):
    instance = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)
    opened = expected(instance)
    worker_transition(worker=worker, to="terminated", actor="tests")  # no lab left: ends at once, no teardown
    instance = lablet_instance_terminate(instance=fresh(instance), actor="tests")
    assert instance.status == "terminated" and ingress(group) == opened

    lifecycle_tick()

    assert ingress(group) == []
    assert fresh(instance).console_access == {}


# --- the API -----------------------------------------------------------------------------------------


def book(client, definition, cidr, owner="student-1"):
    start = timezone.now() + timedelta(hours=1)
    return client.post(INSTANCES, {"definition_id": definition.public_id, "owner_id": owner,
                                   "timeslot_start": start.isoformat(), "student_cidr": cidr}, format="json")


@pytest.mark.parametrize("cidr", ["not-a-range", "203.0.113.0/33", "0.0.0.0/0", "::/0", "10.0.0.0/8/8"])
def test_a_bad_or_whole_internet_range_is_422_and_books_nothing(admin_client, cidr):
    definition = two_router_definition(direct_console_access=True)

    response = book(admin_client, definition, cidr)

    assert response.status_code == 422, response.content
    assert "student_cidr" in response.json()["errors"]
    assert not definition.instances.exists()


def test_a_range_is_normalised_and_shown_and_the_whole_internet_only_when_allowed(admin_client, settings):
    definition = two_router_definition(direct_console_access=True)

    response = book(admin_client, definition, "203.0.113.9/24")
    assert response.status_code == 201, response.content
    assert response.json()["student_cidr"] == "203.0.113.0/24" and response.json()["console_access"] == {}
    listed = admin_client.get(INSTANCES).json()  # the list page's row path shows it too
    assert [row["student_cidr"] for row in listed["lablet_instances"]] == ["203.0.113.0/24"]

    settings.DIRECT_CONSOLE_ALLOW_ANY_ADDRESS = True
    assert book(admin_client, definition, "0.0.0.0/0", owner="student-2").status_code == 201


def test_the_owner_turns_direct_access_on_and_another_instructor_cannot(instructor_client, instructor_user,
                                                                        other_instructor_client):
    definition = two_router_definition(owner=instructor_user)
    url = f"/api/lablet-definitions/{definition.public_id}"

    refused = other_instructor_client.put(url, {"direct_console_access": True}, format="json")
    assert refused.status_code == 403
    response = instructor_client.put(url, {"direct_console_access": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["direct_console_access"] is True
    definition.refresh_from_db()
    assert definition.direct_console_access is True


def test_a_rule_ec2_holds_for_an_ended_instance_without_a_record_is_swept(worker, group):
    """A process died between EC2's answer and the database: the rule is tagged but not recorded."""
    ended = running(worker, two_router_definition(direct_console_access=True), student_cidr=CIDR)
    ports = ports_of(ended)
    lifecycle_tick(now=ended.timeslot_end + timedelta(seconds=1))
    assert fresh(ended).status == "terminated" and ingress(group) == []
    runs = running(worker, two_router_definition(direct_console_access=True), student_cidr="198.51.100.0/24",
                   owner_id="another-student")
    for owner, port in ((ended.public_id, ports[0]), ("inst-of-another-installation", 9999)):
        aws().authorize_security_group_ingress(
            GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                                           "IpRanges": [{"CidrIp": CIDR, "Description": f"labmanager console {owner}"}]}],
            TagSpecifications=[{"ResourceType": "security-group-rule",
                                "Tags": [{"Key": "labmanager:lablet-instance-id", "Value": owner}]}])

    report = lifecycle_tick()

    assert report.get("console_access_swept") == 1
    left = ingress(group)
    assert [rule for rule in left if rule[4].endswith(ended.public_id)] == []
    assert ("tcp", 9999, 9999, CIDR, "labmanager console inst-of-another-installation") in left  # not ours
    assert [rule for rule in left if rule[4].endswith(runs.public_id)] == expected(runs, cidr="198.51.100.0/24")
    assert events(ended)[-1] == "lablet_instance.console_access_closed"
