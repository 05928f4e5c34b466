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
    violations = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="A topology the topology policy refuses (422): one {node: {id, label} or null, rule, detail} per "
                  "violation; rule is malformed, node_definition, external_connector, max_nodes, max_cpus or "
                  "max_memory_mb.",
    )


def problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(ProblemSerializer, description=description)


PROBLEM_JSON = "application/problem+json"


def problem_responses(**by_status: str) -> dict:
    """`problem_responses(s409="...")` → `{(409, "application/problem+json"): <Problem>}` for extend_schema."""
    return {(int(key[1:]), PROBLEM_JSON): problem(text) for key, text in by_status.items()}


COMMON_ERRORS = problem_responses(
    s401="Not authenticated.", s403="Your role does not allow this.", s429="Rate limit exceeded."
)
READ_ERRORS = {**COMMON_ERRORS, **problem_responses(s404="No such resource, or not visible to you.")}
WRITE_ERRORS = {
    **READ_ERRORS,
    **problem_responses(s409="Conflict with the current state.", s422="Validation failed."),
}
