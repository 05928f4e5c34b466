"""Demo data for the embedded default: users per role, workers, definitions, instances in several states.

Idempotent: a second run (every `make run` start) creates nothing new and changes no worker it did not just
launch (it only resets the demo users' passwords).
The demo users have published passwords (`admin` / `admin-demo-pass`): refused unless DEBUG is on, or
`--force` says the installation is a throw-away one (a benchmark, a demo host).
"""

import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.lablets import services as lablets
from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers import services as workers
from apps.workers.models import Worker
from apps.core.errors import DomainError
from apps.identity.services import user_ensure_with_role

ACTOR = "seed_demo"
DEMO_USERS = {"admin": "admin", "operator": "operator", "instructor": "instructor"}
DEMO_WORKERS = [
    {"name": "cml-worker-demo-01", "instance_type": "m5zn.metal"},
    {"name": "cml-worker-demo-02", "instance_type": "m5zn.metal"},
    {"name": "cml-worker-demo-03", "instance_type": "m5.4xlarge"},
]
# The demo instances, booked through the real scheduler and brought up by the real lifecycle engine
# (on the CML simulator under `make run`): (owner, definition index, slot start in minutes from now, then).
DEMO_BOOKINGS = [
    ("student-001", 0, 0, "run"),  # its slot starts now: imported and started on CML at once
    ("student-002", 0, 0, "collect"),  # running, then its node configurations collected
    ("student-003", 0, 120, None),  # scheduled on a worker, comes up 10 minutes before its slot
    ("student-004", 1, 24 * 60, None),  # tomorrow
    ("student-005", 0, 60, "terminate"),  # cancelled
    ("student-006", 2, 24 * 60, None),  # needs more than any worker has: stays pending (a reservation)
]


def demo_password(username: str) -> str:
    return f"{username}-demo-pass"


class Command(BaseCommand):
    help = ("Seed demo users, workers, lablet definitions and instances (idempotent). The demo users have "
            "known passwords: DEBUG only, unless --force.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true",
                            help="seed even with DEBUG off (users with published passwords: never in production)")

    def _book(self, instructor, definitions) -> None:
        now = timezone.now().replace(second=0, microsecond=0)
        booked = {}
        for owner_id, index, starts_in, then in DEMO_BOOKINGS:
            start = now + timedelta(minutes=starts_in)
            booked[owner_id] = (lablets.lablet_instance_create(
                actor=ACTOR, user=instructor, definition_id=definitions[index].public_id, owner_id=owner_id,
                timeslot_start=start, timeslot_end=start + timedelta(hours=2)), then)
        # Bring the labs whose slot starts now up on CML, as the every-minute lifecycle tick would.
        for _ in range(12):  # nodes boot in CML_SIM_BOOT_DELAY (5 s under `make run`)
            lifecycle_tick()
            if all(i.status == "running" for i in LabletInstance.objects.filter(
                    owner_id__in=[o for o, (_, then) in booked.items() if then in ("run", "collect")])):
                break
            time.sleep(1)
        for owner_id, (instance, then) in booked.items():
            instance.refresh_from_db()
            try:
                if then == "collect" and instance.status == "running":
                    lablets.lablet_instance_start_collection(instance=instance, actor=ACTOR)
                elif then == "terminate":
                    lablets.lablet_instance_terminate(instance=instance, actor=ACTOR, reason="demo: cancelled")
            except DomainError as exc:
                self.stderr.write(f"{owner_id}: {exc.detail}")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError("seed_demo creates users with published passwords (admin / admin-demo-pass) and "
                               "runs only with DEBUG on; pass --force to seed this installation anyway.")
        users = {}
        for username, role in DEMO_USERS.items():
            user, _ = user_ensure_with_role(username=username, role=role, actor=ACTOR)
            user.set_password(demo_password(username))
            user.save(update_fields=["password"])
            users[username] = user

        launched = set()
        for spec in DEMO_WORKERS:  # launched in EC2 (the simulator under `make run`)
            if not Worker.objects.filter(name=spec["name"]).exclude(status="terminated").exists():
                workers.worker_create(actor=ACTOR, **spec)
                launched.add(spec["name"])
        stopped = Worker.objects.exclude(status="terminated").get(name="cml-worker-demo-03")
        if stopped.name in launched and stopped.status == "running":  # a restart leaves the fleet as it was
            workers.worker_stop(worker=stopped, actor=ACTOR)

        try:  # CML on the demo workers (the simulator under `make run`): available before placing
            workers.worker_cml_health_all(actor=ACTOR)
        except Exception as exc:  # noqa: BLE001 - demo data without CML still seeds
            self.stderr.write(f"CML health check failed: {exc}")

        # One demo worker also serves the default remote-lab session pool, so the curl walk-through
        # (examples/curl/end_to_end_session.sh) and the Python client work against `make run`.
        from apps.sessions.services import worker_session_pool_set

        session_worker = Worker.objects.exclude(status="terminated").get(name="cml-worker-demo-02")
        worker_session_pool_set(worker=session_worker, pool=settings.SESSION_DEFAULT_POOL, actor=ACTOR)

        topology = (Path(settings.BASE_DIR) / "examples/topologies/two-routers.yaml").read_text()
        definitions = [
            {"name": "python-networking-lab", "version": "1.0.0", "description": "Basic Python networking exercises",
             "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 50, "node_count": 2}},
            {"name": "ospf-basics", "version": "2.1.0", "description": "Single-area OSPF between two routers",
             "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 20, "node_count": 2}},
            {"name": "datacenter-fabric", "version": "0.9.0", "description": "A large spine-leaf fabric",
             "resource_requirements": {"cpu_cores": 400, "memory_gb": 1024, "storage_gb": 2000, "node_count": 2}},
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
        if not LabletInstance.objects.filter(owner_id__in=[b[0] for b in DEMO_BOOKINGS]).exists():
            self._book(users["instructor"], created_definitions)

        self.stdout.write("Demo users (username / password):")
        for username in DEMO_USERS:
            self.stdout.write(f"  {username:<11} / {demo_password(username)}   role: {DEMO_USERS[username]}")
        self.stdout.write(
            f"Demo data: {Worker.objects.exclude(status='terminated').count()} live workers, {LabletDefinition.objects.count()} definitions, "
            f"{definition.instances.count()} instances of {definition.name}."
        )
