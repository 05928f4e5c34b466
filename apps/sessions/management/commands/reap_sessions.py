from django.core.management.base import BaseCommand

from apps.sessions.tasks import reap_sessions


class Command(BaseCommand):
    help = "Run one pass of the session reaper (what the `reap_sessions` schedule does every minute)."

    def handle(self, *args, **options):
        counts = reap_sessions()
        self.stdout.write(" ".join(f"{name}={value}" for name, value in counts.items()))
