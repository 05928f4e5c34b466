"""Domain errors: raised by services, mapped to problem+json in one place (apps.api.problems)."""


class DomainError(Exception):
    status_code = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, errors: dict | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}
        self.extra = extra or {}  # extension members of the problem document (e.g. a quota's limit)


class InvalidTransition(DomainError):
    status_code = 409
    title = "Invalid state transition"

    def __init__(self, entity: str, public_id: str, source: str, target: str):
        super().__init__(f"{entity} {public_id} cannot go from '{source}' to '{target}'.")
        self.source = source
        self.target = target


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"


class ValidationFailed(DomainError):
    status_code = 422
    title = "Unprocessable Entity"


class Forbidden(DomainError):
    status_code = 403
    title = "Forbidden"


class NotFound(DomainError):
    status_code = 404
    title = "Not Found"


class UpstreamUnavailable(DomainError):
    status_code = 502
    title = "Bad Gateway"


class BadRequest(DomainError):
    status_code = 400
    title = "Bad Request"


class PayloadTooLarge(DomainError):
    status_code = 413
    title = "Content Too Large"


class Locked(DomainError):
    status_code = 423
    title = "Locked"


class ServiceUnavailable(DomainError):
    """503 with a Retry-After header (seconds), e.g. a full session queue."""

    status_code = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: int, **kwargs):
        super().__init__(detail, **kwargs)
        self.retry_after = max(int(retry_after), 1)
        self.headers = {"Retry-After": str(self.retry_after)}


class QueueFull(ServiceUnavailable):
    title = "Queue full"
