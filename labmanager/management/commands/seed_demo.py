"""Demo data for the embedded default: users per role, workers, definitions, instances in several states.

Idempotent: a second run creates nothing new (it only resets the demo users' passwords).
"""

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.lablets import services as lablets
from apps.lablets.models import InstanceStatus as S
from apps.lablets.models import LabletDefinition
from apps.workers import services as workers
from apps.workers.models import Worker
from labmanager.services import user_ensure_with_role

ACTOR = "seed_demo"
DEMO_USERS = {"admin": "admin", "operator": "operator", "instructor": "instructor"}
DEMO_WORKERS = [
    {"name": "cml-worker-demo-01", "instance_type": "m5zn.metal"},
    {"name": "cml-worker-demo-02", "instance_type": "m5zn.metal"},
    {"name": "cml-worker-demo-03", "instance_type": "m5.4xlarge"},
]
# The path each demo instance takes through the lifecycle from pending.
DEMO_PATHS = {
    "student-001": [],
    "student-002": [S.SCHEDULED],
    "student-003": [S.SCHEDULED, S.INSTANTIATING, S.RUNNING],
    "student-004": [S.SCHEDULED, S.INSTANTIATING, S.RUNNING, S.COLLECTING],
    "student-005": [S.SCHEDULED, S.INSTANTIATING, S.RUNNING, S.STOPPING, S.STOPPED],
    "student-006": [S.TERMINATED],
}


def demo_password(username: str) -> str:
    return f"{username}-demo-pass"


class Command(BaseCommand):
    help = "Seed demo users, workers, lablet definitions and instances (idempotent)."

    def handle(self, *args, **options):
        users = {}
        for username, role in DEMO_USERS.items():
            user, _ = user_ensure_with_role(username=username, role=role, actor=ACTOR)
            user.set_password(demo_password(username))
            user.save(update_fields=["password"])
            users[username] = user

        for spec in DEMO_WORKERS:  # launched in EC2 (the simulator under `make run`)
            if not Worker.objects.filter(name=spec["name"]).exclude(status="terminated").exists():
                workers.worker_create(actor=ACTOR, **spec)
        stopped = Worker.objects.exclude(status="terminated").get(name="cml-worker-demo-03")
        if stopped.status == "running":
            workers.worker_stop(worker=stopped, actor=ACTOR)

        topology = (Path(settings.BASE_DIR) / "examples/topologies/two-routers.yaml").read_text()
        definitions = [
            {"name": "python-networking-lab", "version": "1.0.0", "description": "Basic Python networking exercises",
             "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 50, "node_count": 5}},
            {"name": "ospf-basics", "version": "2.1.0", "description": "Single-area OSPF between two routers",
             "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 20, "node_count": 2}},
        ]
        created_definitions = []
        for spec in definitions:
            definition = LabletDefinition.objects.filter(name=spec["name"], version=spec["version"]).first()
            if definition is None:
                definition = lablets.lablet_definition_create(
                    actor=ACTOR, user=users["instructor"],
                    data={**spec, "cml_lab_yaml": topology,
                          "lifecycle": {"default_duration_minutes": 120, "max_duration_minutes": 240, "idle_timeout_minutes": 30},
                          "port_definitions": [{"name": "console_1", "device_name": "router1", "console_type": "serial"}]},
                )
            created_definitions.append(definition)

        definition = created_definitions[0]
        if not definition.instances.exists():
            start = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            for owner_id, path in DEMO_PATHS.items():
                instance = lablets.lablet_instance_create(
                    actor=ACTOR, user=users["instructor"], definition_id=definition.public_id, owner_id=owner_id,
                    timeslot_start=start, timeslot_end=start + timedelta(hours=2),
                )
                for state in path:
                    instance = lablets.lablet_instance_transition(instance=instance, to=state, actor=ACTOR, reason="demo data")

        self.stdout.write("Demo users (username / password):")
        for username in DEMO_USERS:
            self.stdout.write(f"  {username:<11} / {demo_password(username)}   role: {DEMO_USERS[username]}")
        self.stdout.write(
            f"Demo data: {Worker.objects.exclude(status='terminated').count()} live workers, {LabletDefinition.objects.count()} definitions, "
            f"{definition.instances.count()} instances of {definition.name}."
        )
