"""Receivers of the sessions app (connected in LabSessionsConfig.ready)."""

from django.conf import settings
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from apps.sessions.services import sessions_end_of_deleted_user


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="lab_sessions.end_sessions_of_deleted_user")
def end_sessions_of_deleted_user(sender, instance, **kwargs):
    """A deleted user's live sessions end, in the deletion's transaction, before their owner column is set
    NULL: they never pass for anonymous ones (security.md, Remote-lab sessions)."""
    sessions_end_of_deleted_user(user_id=instance.pk, actor="system",
                                 reason=f"its user {instance.get_username()} was deleted")
