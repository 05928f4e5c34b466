"""django-q2 entry points of identity (schedules in settings.Q_SCHEDULES)."""

from apps.identity.provider_sync import provider_users_sync as _sync


def provider_users_sync() -> dict | None:
    """The provider's users against Keycloak's admin API (apps.identity.provider_sync); None when off."""
    return _sync()
