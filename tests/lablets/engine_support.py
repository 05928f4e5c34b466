"""Shared set-up for the lifecycle engine tests (tests/lablets/test_engine*.py): a running worker with CML
available, a two-router definition with console ports, instances placed on the worker, S3 listings.

Everything goes over HTTP to the CML simulator (the `cml` fixture) and to moto's S3 (the session's
EC2/S3 simulator); nothing is patched. Time is passed to the engine as `now=` where a test needs the
future (slot ends, expiry, backoff), never frozen."""

from datetime import timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.models import Worker
from apps.workers.services import worker_transition
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TWO_ROUTERS = (ROOT / "examples/topologies/two-routers.yaml").read_text()
PORTS = [
    {"name": "r1-console", "device_name": "router1", "console_type": "serial"},
    {"name": "r2-telnet", "device_name": "router2", "console_type": "telnet", "port": 23},
]
WORKER_IP = "198.51.100.7"
CONSOLE_HOST = "127.0.0.1"  # settings.CONSOLE_HOST in the tests (tests/conftest.py): the simulator's PATty


def running_worker(**kwargs) -> Worker:
    worker = worker_transition(worker=WorkerFactory(**kwargs), to="running", actor="tests")
    Worker.objects.filter(pk=worker.pk).update(cml_service_status="available", ip_address=WORKER_IP)
    worker.refresh_from_db()
    return worker


def two_router_definition(**kwargs):
    values = {"cml_lab_yaml": TWO_ROUTERS, "node_count": 2, "port_definitions": PORTS, "idle_timeout_minutes": 30,
              **kwargs}
    return LabletDefinitionFactory(**values)


def scheduled(worker, definition, *, starts_in=timedelta(minutes=5), minutes=60, **kwargs) -> LabletInstance:
    """An instance placed on `worker` (as the scheduler would have), its slot starting in `starts_in`."""
    start = timezone.now() + starts_in
    instance = LabletInstanceFactory(
        definition=definition, worker=worker, timeslot_start=start, timeslot_end=start + timedelta(minutes=minutes),
        cpu_cores=definition.cpu_cores, memory_gb=definition.memory_gb, storage_gb=definition.storage_gb,
        node_count=definition.node_count, port_count=len(definition.port_definitions), **kwargs)
    return lablet_instance_transition(instance=instance, to="scheduled", actor="tests")


def fresh(instance) -> LabletInstance:
    return LabletInstance.objects.select_related("definition", "worker").get(pk=instance.pk)


def labs(cml) -> dict:
    """The labs on the CML simulator: id -> {title, state, nodes}."""
    return cml.summary()["labs"]


def labs_titled(cml, title) -> list[str]:
    return [lab_id for lab_id, lab in labs(cml).items() if lab["title"] == title]


def wait_for_boot(cml, instance) -> None:
    """Until the CML simulator has booted every node of the instance's lab (its boot_delay has run out)."""
    lab_id = LabletInstance.objects.get(pk=instance.pk).cml_lab_id
    assert lab_id, "the instance has no lab on CML"
    wait_until(lambda: labs(cml)[lab_id]["state"] == "BOOTED", what=f"the nodes of lab {lab_id} to boot")


def events(instance, prefix="lablet_instance.") -> list[str]:
    return list(AuditEvent.objects.filter(resource_id=instance.public_id, event_type__startswith=prefix)
                .order_by("id").values_list("event_type", flat=True))


def s3_keys(prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=settings.AWS_ENDPOINT_URL, region_name=settings.AWS_REGION,
                      config=Config(s3={"addressing_style": "path"}))
    response = s3.list_objects_v2(Bucket=settings.ARCHIVE_S3_BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def s3_read(key: str) -> bytes:
    s3 = boto3.client("s3", endpoint_url=settings.AWS_ENDPOINT_URL, region_name=settings.AWS_REGION,
                      config=Config(s3={"addressing_style": "path"}))
    return s3.get_object(Bucket=settings.ARCHIVE_S3_BUCKET, Key=key)["Body"].read()
