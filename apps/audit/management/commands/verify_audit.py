import time

from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import audit_verify

EXIT_TAMPERED = 1


class Command(BaseCommand):
    help = ("Verify the audit journal's hash chain (as POST /api/audit/verify does). Prints progress on long runs "
            "and a summary; exits 1 if the chain is broken. The check is journalled as audit.verified.")

    def add_arguments(self, parser):
        parser.add_argument("--actor", default="system", help="who is verifying, as journalled (default: system)")
        parser.add_argument("--no-record", action="store_true", help="do not journal the check (read-only use)")

    def handle(self, *args, actor, no_record, verbosity, **options):
        started = time.monotonic()
        last_report = [started]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if verbosity >= 1 and now - last_report[0] >= 2.0:
                last_report[0] = now
                rate = done / (now - started)
                self.stderr.write(f"  {done:,} / {total:,} events ({done * 100 // max(total, 1)} %, {rate:,.0f}/s)")

        result = audit_verify(actor=actor, record=not no_record, progress=progress)
        elapsed = time.monotonic() - started
        if result.valid:
            self.stdout.write(self.style.SUCCESS(
                f"Audit chain valid: {result.total_events:,} events in {elapsed:.1f} s; root {result.chain_root_hash}"))
            return
        raise CommandError(
            f"Audit chain BROKEN at event {result.first_tampered}: {result.reason} "
            f"({result.total_events:,} events, {elapsed:.1f} s)",
            returncode=EXIT_TAMPERED,
        )
