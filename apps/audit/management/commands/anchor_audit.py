from django.core.management.base import BaseCommand, CommandError

from apps.audit.anchors import AnchorError
from apps.audit.services import audit_anchor


class Command(BaseCommand):
    help = ("Write the head of the audit chain (sequence number, hash, time, their HMAC) outside the database: "
            "to AUDIT_ANCHOR_DIR and/or AUDIT_ANCHOR_BUCKET, as the audit_anchor schedule does. Journalled as "
            "audit.anchored; exits 1 when no store is configured or a store cannot be written.")

    def add_arguments(self, parser):
        parser.add_argument("--actor", default="system", help="who is anchoring, as journalled (default: system)")

    def handle(self, *args, actor, **options):
        try:
            anchors = audit_anchor(actor=actor)
        except AnchorError as exc:
            raise CommandError(f"Audit chain NOT anchored: {exc}", returncode=1) from exc
        if not anchors:
            self.stdout.write("The journal is empty: nothing to anchor.")
            return
        head = anchors[0]
        for anchor in anchors:
            self.stdout.write(self.style.SUCCESS(
                f"Anchored event {head.sequence_num} ({head.event_hash}) in {anchor.location}"))
