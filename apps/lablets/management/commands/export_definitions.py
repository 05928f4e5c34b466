"""Write lablet definitions (every version) as JSON, for import_definitions on another installation."""

import json

from django.core.management.base import BaseCommand

from apps.lablets.services.transfer import export_document


class Command(BaseCommand):
    help = ("Export lablet definitions, every version, as JSON (stdout, or --output FILE) for "
            "import_definitions on another installation.")

    def add_arguments(self, parser):
        parser.add_argument("--name", action="append", dest="names", metavar="NAME",
                            help="only definitions with this name (repeatable)")
        parser.add_argument("--active-only", action="store_true", help="leave deprecated definitions out")
        parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    def handle(self, *args, names, active_only, output, **options):
        document = export_document(names=names, active_only=active_only)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if output:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            self.stdout.write(text, ending="")
        self.stderr.write(f"Exported {len(document['definitions'])} definition(s).")
