from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.core.errors import DomainError
from apps.identity.services import ROLES, api_key_create, user_ensure_with_role


class Command(BaseCommand):
    help = ("Create an API key for a user (created if missing, added to ROLE); the key carries ROLE. "
            "Prints the key alone on stdout.")

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument("--expires-in-days", type=int, default=None, help="the key stops working after this")

    def handle(self, *args, user, role, name, expires_in_days, **options):
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            account, created = user_ensure_with_role(username=user, role=role, actor="create_api_key")
            _, raw = api_key_create(user=account, name=name, role=role, expires_at=expires_at, actor="create_api_key")
        except DomainError as exc:
            raise CommandError(exc.detail)
        if created:
            self.stderr.write(f"Created user {user} with role {role}.")
        self.stdout.write(raw)
