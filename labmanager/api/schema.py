"""OpenAPI pieces shared by every endpoint: the problem+json body and its responses."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    trace_id = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors by field (422).",
    )


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(ProblemSerializer, description=description)


COMMON_ERRORS = {
    401: problem("Not authenticated."),
    403: problem("Your role does not allow this."),
    429: problem("Rate limit exceeded."),
}
READ_ERRORS = {**COMMON_ERRORS, 404: problem("No such resource, or not visible to you.")}
WRITE_ERRORS = {**READ_ERRORS, 409: problem("Conflict with the current state."), 422: problem("Validation failed.")}
