"""factory_boy factories. Rows are created through the ORM for speed; states are reached through the
lifecycle function (see `instance_in`) so no test writes `status` directly."""

from datetime import timedelta

import factory
from django.utils import timezone

from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers.models import Worker

TOPOLOGY = "lab:\n  title: demo\nnodes: []\nlinks: []\n"


_instance_pool: list[str] = []


def moto_instance_id() -> str:
    """The id of a real (running) instance in the EC2 simulator; launched 50 at a time for speed."""
    from apps.workers import ec2

    if not _instance_pool:
        response = ec2._call("us-west-2", "run_instances", ImageId="ami-12c6146b", InstanceType="m5zn.metal",
                             MinCount=50, MaxCount=50)
        _instance_pool.extend(i["InstanceId"] for i in response["Instances"])
    return _instance_pool.pop()


def forget_instance_pool() -> None:
    """After an EC2 reset the pooled ids no longer exist."""
    _instance_pool.clear()


class WorkerFactory(factory.django.DjangoModelFactory):
    """A worker record over a real instance in the EC2 simulator (status pending: reach others with
    worker_transition)."""

    class Meta:
        model = Worker

    name = factory.Sequence(lambda n: f"cml-worker-{n:02d}")
    aws_instance_id = factory.LazyFunction(moto_instance_id)
    instance_type = "m5zn.metal"
    cpu_cores = 48
    memory_gb = 192
    storage_gb = 500
    max_nodes = 100


class LabletDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabletDefinition

    name = factory.Sequence(lambda n: f"lab-{n}")
    version = "1.0.0"
    cml_lab_yaml = TOPOLOGY
    content_hash = factory.LazyAttribute(lambda o: LabletDefinition.hash_yaml(o.cml_lab_yaml))
    cpu_cores = 4
    memory_gb = 8
    storage_gb = 50
    node_count = 5
    default_duration_minutes = 120
    max_duration_minutes = 240
    created_by = None
    owner = factory.SelfAttribute("created_by")  # as lablet_definition_create: its creator owns it


class LabletInstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LabletInstance

    definition = factory.SubFactory(LabletDefinitionFactory)
    owner_id = factory.Sequence(lambda n: f"student-{n:05d}")
    timeslot_start = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    timeslot_end = factory.LazyAttribute(lambda o: o.timeslot_start + timedelta(hours=2))
    # What it needs, copied from the definition as lablet_instance_create does.
    cpu_cores = factory.SelfAttribute("definition.cpu_cores")
    memory_gb = factory.SelfAttribute("definition.memory_gb")
    storage_gb = factory.SelfAttribute("definition.storage_gb")
    node_count = factory.SelfAttribute("definition.node_count")
    port_count = factory.LazyAttribute(lambda o: len(o.definition.port_definitions or []))


# Shortest path from pending to each state, through allowed edges only.
PATH_TO = {
    "pending": [],
    "scheduled": ["scheduled"],
    "instantiating": ["scheduled", "instantiating"],
    "running": ["scheduled", "instantiating", "running"],
    "collecting": ["scheduled", "instantiating", "running", "collecting"],
    "grading": ["scheduled", "instantiating", "running", "collecting", "grading"],
    "stopping": ["scheduled", "instantiating", "running", "stopping"],
    "stopped": ["scheduled", "instantiating", "running", "stopping", "stopped"],
    "archived": ["scheduled", "instantiating", "running", "stopping", "stopped", "archived"],
    "terminated": ["terminated"],
}


def instance_in(state: str, **kwargs) -> LabletInstance:
    from apps.lablets.services import lablet_instance_transition

    instance = LabletInstanceFactory(**kwargs)
    for step in PATH_TO[state]:
        instance = lablet_instance_transition(instance=instance, to=step, actor="tests")
    return instance


def placeable_worker(**fields) -> Worker:
    """A running worker whose CML is available (takes placements); `fields` override capacity etc."""
    from apps.workers.services.fleet import worker_transition

    worker = WorkerFactory(cml_service_status="available", license_status="registered",
                           license_tier="enterprise", **fields)
    return worker_transition(worker=worker, to="running", actor="tests")


def walk_an_instance_through_its_life() -> tuple[LabletInstance, Worker, str]:
    """One instance taken through its whole life by the services, emitting every kind of instance event:
    booked with no worker yet (created), placed (scheduled), instantiating, its CML lab recorded
    (lab_imported), progressed, running, extended, collecting, grading, graded, stopping, stopped,
    archived, terminated. Returns (instance, worker, the CML lab id)."""
    from apps.lablets.services import lablet_instance_create, lablet_instance_extend, lablet_instance_transition
    from apps.lablets.services.instances import lablet_instance_record_grading, lablet_instance_record_progress
    from apps.lablets.services.scheduling import lablet_instances_schedule_pending
    from apps.lablets.services.steps import lablet_instance_record_lab

    definition = LabletDefinitionFactory(keep_lab_until_slot_end=True)  # graded, then stopped by the walk itself
    instance = lablet_instance_create(actor="tests", definition_id=definition.public_id, owner_id="student-ce",
                                      timeslot_start=timezone.now() + timedelta(minutes=1), place=False)
    worker = placeable_worker()
    lablet_instances_schedule_pending(actor="tests")
    instance.refresh_from_db()
    assert instance.worker_id == worker.pk, "the scheduler placed it"
    instance = lablet_instance_transition(instance=instance, to="instantiating", actor="tests")
    lab_id = "lab-ce-0001"
    instance = lablet_instance_record_lab(instance_pk=instance.pk, lab_id=lab_id, actor="tests", adopted=False)
    lablet_instance_record_progress(instance=instance, step="starting", actor="tests")
    instance = lablet_instance_transition(instance=instance, to="running", actor="tests")
    instance = lablet_instance_extend(instance=instance, actor="tests", minutes=15)
    for state in ("collecting", "grading"):  # (the collection service reads the lab's configs from CML)
        instance = lablet_instance_transition(instance=instance, to=state, actor="tests")
    instance = lablet_instance_record_grading(instance=instance, actor="tests", score=8, max_score=10)
    for state in ("stopping", "stopped", "archived", "terminated"):
        instance = lablet_instance_transition(instance=instance, to=state, actor="tests")
    return instance, worker, lab_id
