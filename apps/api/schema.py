"""OpenAPI pieces shared by every endpoint: the problem+json body and its responses, and the postprocessing
hook that declares, generically, what the middleware and the shared plumbing add to every operation
(`complete_operations`: headers, the statuses every operation can answer, Idempotency-Key)."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.settings import api_settings

from apps.core.errors import CODES


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    code = serializers.ChoiceField(
        choices=sorted(CODES.items()),  # the enum's description lists each code's meaning
        help_text="Stable, machine-readable cause: branch on this, not on `title` or `detail` (docs/api.md#error-codes).",
    )
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


# --- the postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) -------------------------------

def header(description: str, schema: dict, *, required: bool) -> dict:
    return {"description": description, "required": required, "schema": schema}


TRACE_ID = header("This request's id, also in the problem document's `trace_id` and the server's log.",
                   {"type": "string"}, required=True)
RETRY_AFTER = header("Seconds to wait before trying again.", {"type": "integer", "minimum": 1}, required=True)
TOTAL_COUNT = header("Rows matching the filters, over all pages.", {"type": "integer", "minimum": 0}, required=True)
LINK = header('RFC 8288 links to the `next`, `prev`, `first` and `last` pages.', {"type": "string"}, required=True)
REPLAYED = header("`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
                   {"type": "string", "enum": ["true"]}, required=False)


def rate_limit_headers(*, required: bool) -> dict:
    return {
        "X-RateLimit-Limit": header("The rate-limit bucket's size (requests).", {"type": "integer"}, required=required),
        "X-RateLimit-Remaining": header("Requests left in the bucket.", {"type": "integer"}, required=required),
        "X-RateLimit-Reset": header("Epoch seconds when the bucket is full again.", {"type": "integer"},
                                     required=required),
    }


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255},
    "description": "Any unique string (a UUID): a retry with the same key and body gets the first answer again "
                   "(with `Idempotent-Replayed: true`) instead of creating twice; the same key with another body "
                   "is 422. Kept IDEMPOTENCY_TTL_HOURS.",
}

# What an operation can answer beyond what its view declares, with the condition that adds it.
GENERIC_PROBLEMS = {
    "400": "The body is not valid JSON (code malformed_request).",
    "401": "Not authenticated: no credentials, or bad, revoked or expired ones.",
    "403": "Your role does not allow this, or a session's write lacks the CSRF token.",
    "404": "No such resource, or not visible to you.",
    "415": "The Content-Type is not one this operation reads.",
    "422": "Validation failed (query parameters or body).",
    "429": "Rate limit exceeded: retry after Retry-After seconds.",
}


def _view_class(callback):
    return getattr(callback, "cls", None)


def _view_handler(callback, method: str):
    cls = _view_class(callback)
    actions = getattr(callback, "actions", None) or {}
    name = actions.get(method.lower(), method.lower())
    return getattr(cls, name, None)


def _throttles(callback) -> list:
    cls = _view_class(callback)
    return list(getattr(cls, "throttle_classes", api_settings.DEFAULT_THROTTLE_CLASSES) or [])


def _always_counted(throttles: list) -> bool:
    """Throttles that count every request (the API's default); others count only when configured."""
    from apps.api.throttling import ApiRateThrottle

    return bool(throttles) and all(issubclass(t, ApiRateThrottle) for t in throttles)


def _authenticated(operation: dict) -> bool:
    return any(requirement for requirement in operation.get("security", []))


def _is_list(operation: dict, schemas: dict) -> bool:
    """A list: its 200 answers the envelope {<resource>: [...], total, limit, offset} (apps.api.lists)."""
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    ref = next(iter(content.values()), {}).get("schema", {}).get("$ref", "")
    properties = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}) if ref else {}
    return {"total", "limit", "offset"} <= set(properties)


def problem_response_schema(description: str) -> dict:
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def complete_operation(operation: dict, *, path: str, method: str, callback, schemas: dict) -> None:
    """Declare on one operation what the shared plumbing does to it."""
    from apps.api.idempotency import HEADER, honours_idempotency_key

    responses = operation.setdefault("responses", {})
    throttles = _throttles(callback) if callback is not None else []
    has_body = "requestBody" in operation
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))

    wanted = []
    if _authenticated(operation):
        wanted += ["401", "403"]
    if throttles:
        wanted.append("429")
    if "{" in path:
        wanted.append("404")
    if has_body:
        wanted += ["400", "415", "422"]
    elif has_query and callback is not None:
        wanted.append("422")
    for status in wanted:
        responses.setdefault(status, problem_response_schema(GENERIC_PROBLEMS[status]))

    idempotent = callback is not None and honours_idempotency_key(_view_handler(callback, method))
    if idempotent:
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("name") == HEADER for p in parameters):
            parameters.append(IDEMPOTENCY_KEY)

    listed = _is_list(operation, schemas)
    for status, response in responses.items():
        headers = response.setdefault("headers", {})
        headers["X-Trace-Id"] = TRACE_ID
        if throttles:  # a 404 of an id the route's pattern refuses reaches no view: not counted
            headers.update(rate_limit_headers(required=_always_counted(throttles) and status != "404"))
        if status in ("429", "503"):
            headers["Retry-After"] = RETRY_AFTER
        if status == "200" and listed:
            headers["X-Total-Count"] = TOTAL_COUNT
            headers["Link"] = LINK
        if idempotent and status.startswith("2"):
            headers["Idempotent-Replayed"] = REPLAYED


def complete_operations(result, generator, request, public):
    """Every operation: X-Trace-Id; X-RateLimit-* where counted; Retry-After on 429 and 503; X-Total-Count and
    Link on lists; Idempotency-Key and Idempotent-Replayed where honoured; 400/401/403/404/415/422/429 where
    they can occur. Runs after the hooks that add plain Django views (apps.events.schema, apps.identity.schema)."""
    callbacks = {(path, method.lower()): callback for path, _regex, method, callback in (generator.endpoints or [])}
    schemas = result.get("components", {}).get("schemas", {})
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                complete_operation(operation, path=path, method=method, callback=callbacks.get((path, method)),
                                   schemas=schemas)
    return result
