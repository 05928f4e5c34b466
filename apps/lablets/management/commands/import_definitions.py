"""Import lablet definitions written by export_definitions (idempotent; all or nothing)."""

import sys

from django.core.management.base import BaseCommand, CommandError

from apps.lablets.services.transfer import TransferError, lablet_definitions_import, parse_document
from apps.core.errors import DomainError


class Command(BaseCommand):
    help = ("Import lablet definitions from an export_definitions file ('-' for stdin). A name and version "
            "already here with the same content is skipped; with different content the import stops and "
            "writes nothing, unless --update. Exits 1 on any error.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="the JSON export, or - for stdin")
        parser.add_argument("--update", action="store_true",
                            help="overwrite existing versions whose content differs")
        parser.add_argument("--dry-run", action="store_true", help="say what would happen, write nothing")
        parser.add_argument("--actor", default="import_definitions", help="the actor in the audit journal")

    def handle(self, *args, file, update, dry_run, actor, **options):
        try:
            if file == "-":
                text = sys.stdin.read()
            else:
                with open(file, encoding="utf-8") as handle:
                    text = handle.read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.")
        try:
            entries = parse_document(text)
            results = lablet_definitions_import(entries=entries, actor=actor, update=update, dry_run=dry_run)
        except TransferError as exc:
            raise CommandError(f"{file} cannot be imported:\n  " + "\n  ".join(exc.problems))
        except DomainError as exc:
            raise CommandError(exc.detail)
        for result in results:
            changed = f" ({', '.join(result['changed'])})" if result["changed"] else ""
            self.stdout.write(f"{result['result']:<9} {result['name']} {result['version']}{changed}")
        counts = {kind: sum(r["result"] == kind for r in results) for kind in ("created", "updated", "unchanged")}
        prefix = "Dry run, nothing written: " if dry_run else ""
        self.stderr.write(prefix + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + ".")
