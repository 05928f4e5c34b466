"""Run the EC2 sync and the CML health check once and print the fleet."""

from django.core.management.base import BaseCommand

from apps.workers.models import Worker, WorkerStatus
from apps.workers.services import worker_cml_health_all, worker_ec2_sync


class Command(BaseCommand):
    help = "Reconcile workers with EC2, check every running worker's CML, and print a table of workers."

    def handle(self, *args, **options):
        ec2 = worker_ec2_sync(actor="sync_workers")
        cml = worker_cml_health_all(actor="sync_workers")
        self.stderr.write(
            f"ec2_sync: {ec2['ec2_calls']} EC2 call(s), {ec2['updated']} changed, {ec2['imported']} imported, "
            f"{ec2['gone']} gone, {len(ec2['errors'])} error(s); cml_health: {cml['available']}/{cml['checked']} available"
        )
        for error in ec2["errors"]:
            self.stderr.write(f"  error: {error}")
        header = f"{'id':<24} {'name':<24} {'status':<11} {'ec2 instance':<21} {'cml':<12} {'licence':<12} {'nodes':>5} drain"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for w in Worker.objects.exclude(status=WorkerStatus.TERMINATED).order_by("name"):
            self.stdout.write(
                f"{w.public_id:<24} {w.name[:24]:<24} {w.status:<11} {w.aws_instance_id or '-':<21} "
                f"{w.cml_service_status:<12} {w.license_status:<12} {w.nodes_running:>5} {'yes' if w.draining else 'no'}"
            )
