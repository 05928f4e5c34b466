"""Domain errors: raised by services, mapped to problem+json in one place (apps.api.problems).

Every problem document carries a stable, machine-readable `code` (docs/api.md#error-codes): a domain error's
class has one, a raise site may name a more specific one (`NotFound(..., code="session_not_found")`), and
apps.api.problems gives DRF's and Django's refusals theirs by status. CODES lists them all, with their
meaning: the OpenAPI document's Problem.code enum is made from it (apps/api/schema.py)."""

CODES: dict[str, str] = {
    "bad_request": "400: the request cannot be read (e.g. a malformed header).",
    "malformed_request": "400: the body is not valid JSON (or not the declared media type's syntax).",
    "not_authenticated": "401: no credentials, or bad, revoked or expired ones.",
    "permission_denied": "403: your role does not allow this (or the CSRF check failed on a session's write).",
    "not_found": "404: no such path or resource, or not visible to you.",
    "worker_not_found": "404: no worker with this id.",
    "worker_template_not_found": "404: no worker template with this id.",
    "lablet_definition_not_found": "404: no lablet definition with this id.",
    "lablet_instance_not_found": "404: no lablet instance with this id visible to you.",
    "webhook_not_found": "404: no webhook with this id visible to you.",
    "method_not_allowed": "405: the path does not take this method (the Allow header says which do).",
    "not_acceptable": "406: the Accept header asks for a media type the API does not produce.",
    "conflict": "409: the request conflicts with the current state (e.g. an Idempotency-Key still in progress).",
    "invalid_transition": "409: the resource's status does not allow this verb now.",
    "insufficient_capacity": "409: the worker has no room for the lab beside what it holds (the capacity ledger).",
    "payload_too_large": "413: the body (e.g. an uploaded topology) is larger than allowed.",
    "unsupported_media_type": "415: the Content-Type is not one the operation reads.",
    "validation_failed": "422: the body or query does not validate; `errors` has the messages by field.",
    "topology_refused": "422: the topology policy refuses the topology; `violations` lists why.",
    "locked": "423: the session's lab is held by another request or not yet ready.",
    "rate_limited": "429: the rate limit is exhausted; retry after Retry-After seconds.",
    "internal_error": "500: an unexpected error; quote the trace_id to support.",
    "upstream_unavailable": "502: EC2, a CML worker or the identity provider failed or refused.",
    "service_unavailable": "503: not ready now (a dependency is down); retry after Retry-After seconds.",
    "queue_full": "503: the session queue is full; retry after Retry-After seconds.",
}


class DomainError(Exception):
    status_code = 400
    title = "Bad Request"
    code = "bad_request"

    def __init__(self, detail: str, *, errors: dict | None = None, extra: dict | None = None, code: str = ""):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code  # a more specific code than the class's (one of CODES)
        self.errors = errors or {}
        self.extra = extra or {}  # extension members of the problem document (e.g. a quota's limit)


class InvalidTransition(DomainError):
    status_code = 409
    title = "Invalid state transition"
    code = "invalid_transition"

    def __init__(self, entity: str, public_id: str, source: str, target: str):
        super().__init__(f"{entity} {public_id} cannot go from '{source}' to '{target}'.")
        self.source = source
        self.target = target


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"
    code = "conflict"


class ValidationFailed(DomainError):
    status_code = 422
    title = "Unprocessable Entity"
    code = "validation_failed"


class Forbidden(DomainError):
    status_code = 403
    title = "Forbidden"
    code = "permission_denied"


class NotFound(DomainError):
    status_code = 404
    title = "Not Found"
    code = "not_found"


class UpstreamUnavailable(DomainError):
    status_code = 502
    title = "Bad Gateway"
    code = "upstream_unavailable"


class BadRequest(DomainError):
    status_code = 400
    title = "Bad Request"
    code = "bad_request"


class PayloadTooLarge(DomainError):
    status_code = 413
    title = "Content Too Large"
    code = "payload_too_large"


class Locked(DomainError):
    status_code = 423
    title = "Locked"
    code = "locked"


class ServiceUnavailable(DomainError):
    """503 with a Retry-After header (seconds), e.g. a full session queue."""

    status_code = 503
    title = "Service Unavailable"
    code = "service_unavailable"

    def __init__(self, detail: str, *, retry_after: int, **kwargs):
        super().__init__(detail, **kwargs)
        self.retry_after = max(int(retry_after), 1)
        self.headers = {"Retry-After": str(self.retry_after)}


class QueueFull(ServiceUnavailable):
    title = "Queue full"
    code = "queue_full"
