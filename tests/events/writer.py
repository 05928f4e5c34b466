"""Run in a separate process (the q cluster's stand-in): write journal events through the audit service.

    python tests/events/writer.py <resource_type> <resource_id> <event_type> [<event_type> ...]
    python tests/events/writer.py <resource_type>/<resource_id>/<event_type> [...]   (several resources)
Each event is one transaction (sealed and published after its commit). Prints the sequence numbers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")

import django  # noqa: E402

django.setup()

from django.db import transaction  # noqa: E402

from apps.audit.models import AuditEvent  # noqa: E402
from apps.audit.services import audit_record  # noqa: E402


def main(*args: str) -> None:
    if "/" in args[0]:
        triples = [arg.split("/", 2) for arg in args]
    else:
        triples = [(args[0], args[1], event_type) for event_type in args[2:]]
    written = []
    for resource_type, resource_id, event_type in triples:
        with transaction.atomic():
            event = audit_record(event_type=event_type, actor="system", resource_type=resource_type,
                                 resource_id=resource_id, action=event_type,
                                 metadata={"worker_id": resource_id if resource_type == "worker" else "wrk-other",
                                           "to": event_type.rsplit(".", 1)[-1]})
        written.append(event)
    # Sealed right after each commit (apps/audit/services.py): read the sequence numbers back.
    numbers = dict(AuditEvent.objects.filter(pk__in=[e.pk for e in written]).values_list("pk", "sequence_num"))
    print(" ".join(str(numbers[event.pk]) for event in written))


if __name__ == "__main__":
    main(*sys.argv[1:])
