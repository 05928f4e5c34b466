"""Bodies of /api/lablet-instances/{id}/student-link (docs/api.md#student-links)."""

from django.utils import timezone
from rest_framework import serializers

from apps.lablets.services.student_links import student_link_expires_at, student_link_state


class StudentLinkSerializer(serializers.Serializer):
    """Whether the instance has a link, never its token (shown once, in the POST's answer)."""

    instance_id = serializers.CharField()
    exists = serializers.BooleanField(help_text="An unrevoked link exists (it may have expired or ended).")
    status = serializers.CharField(help_text="none (never made), active, expired, revoked, or ended (the "
                                             "instance is terminated).")
    prefix = serializers.CharField(allow_null=True, help_text="The token's first characters: names the link.")
    created_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)

    @staticmethod
    def describe(instance, link) -> dict:
        if link is None:
            return {"instance_id": instance.public_id, "exists": False, "status": "none", "prefix": None,
                    "created_at": None, "expires_at": None, "revoked_at": None, "last_used_at": None}
        return {"instance_id": instance.public_id, "exists": link.revoked_at is None,
                "status": student_link_state(link, timezone.now()), "prefix": link.prefix,
                "created_at": link.created_at, "expires_at": student_link_expires_at(link),
                "revoked_at": link.revoked_at, "last_used_at": link.last_used_at}


class StudentLinkCreatedSerializer(StudentLinkSerializer):
    url = serializers.CharField(help_text="The student's URL (its token): in this answer only, never again.")


class StudentLinkCreateSerializer(serializers.Serializer):
    expires_at = serializers.DateTimeField(
        required=False, help_text="When the link stops working (future). Default: the instance's timeslot end "
                                  "+ STUDENT_LINK_GRACE_MINUTES, following extensions.")

    def validate_expires_at(self, value):
        if value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value
