"""Reconcile django-q2 schedules with settings.Q_SCHEDULES: create, update, delete by name. Idempotent."""

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone
from django_q.models import Schedule

MANAGED_PREFIX = "labmanager:"


class Command(BaseCommand):
    help = "Create, update and delete the django-q2 schedules declared in settings.Q_SCHEDULES (by name)."

    def handle(self, *args, **options):
        wanted = {MANAGED_PREFIX + name: spec for name, spec in settings.Q_SCHEDULES.items()}
        existing = {s.name: s for s in Schedule.objects.filter(name__startswith=MANAGED_PREFIX)}
        created = updated = deleted = 0
        for name, spec in wanted.items():
            fields = {"func": spec["func"], "schedule_type": spec["schedule_type"],
                      "minutes": spec.get("minutes"), "cron": spec.get("cron"),
                      "args": spec.get("args"), "kwargs": spec.get("kwargs"), "repeats": -1}
            current = existing.get(name)
            if current is None:
                Schedule.objects.create(name=name, **fields)
                created += 1
            elif any(getattr(current, k) != v for k, v in fields.items()):
                for key, value in fields.items():
                    setattr(current, key, value)
                current.next_run = timezone.now()  # django-q computes the next run from here
                current.save()
                updated += 1
        for name, schedule in existing.items():
            if name not in wanted:
                schedule.delete()
                deleted += 1
        self.stdout.write(f"schedules: {created} created, {updated} updated, {deleted} deleted, {len(wanted)} declared")
