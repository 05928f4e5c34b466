"""Shared API plumbing models: API keys and idempotency records."""

import hashlib
import secrets

from django.conf import settings
from django.db import models

API_KEY_PREFIX = "lm_"


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeyRole(models.TextChoices):
    ADMIN = "admin"
    OPERATOR = "operator"
    INSTRUCTOR = "instructor"


class ApiKey(models.Model):
    """An API key of a user. Only the SHA-256 of the key is stored; the key itself is shown once.

    Requests made with the key have its `role` alone (if the user still holds a role that grants it);
    blank: every role of the user (keys made before keys carried roles). Past `expires_at`, or once
    revoked, the key gets 401."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, help_text="First characters of the key, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    role = models.CharField(max_length=20, choices=ApiKeyRole.choices, blank=True,
                            help_text="The one role of requests made with this key; blank: all the user's roles.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Blank: never.")

    class Meta:
        db_table = "labmanager_apikey"  # made when this was the `labmanager` app (apps/api/migrations/0001)
        verbose_name = "API key"

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    @property
    def sha256(self) -> str:
        return self.key_hash

    def is_expired(self, now) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def state(self, now) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired(now) else "active"


class IdempotencyRecord(models.Model):
    """The first response to a create request sent with an Idempotency-Key, replayed on retries."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body.")
    status_code = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "labmanager_idempotencyrecord"  # made when this was the `labmanager` app
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_user_key")]

    def __str__(self):
        return f"{self.key} → {self.status_code}"
