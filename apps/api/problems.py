"""RFC 7807 problem details for every error under /api, with a trace_id."""

import logging
from http import HTTPStatus

from django.core.exceptions import PermissionDenied
from django.dispatch import Signal
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from apps.core.errors import CODES, DomainError
from apps.core.middleware import current_trace_id

# Sent by the exception handler with the `request`, the `exc` and the problem `response` of every refusal of
# a DRF view; the audit app journals the refused changes (apps.audit.api.refusals). Receivers never raise.
request_refused = Signal()

log = logging.getLogger("labmanager.errors")
PROBLEM_CONTENT_TYPE = "application/problem+json"


def _title(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


# The `code` of a problem whose cause names none (Django's and DRF's refusals): by status. DRF exceptions
# whose class says more have theirs in EXCEPTION_CODES. Every value is one of apps.core.errors.CODES.
STATUS_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_failed", 423: "locked", 429: "rate_limited",
    500: "internal_error", 502: "upstream_unavailable", 503: "service_unavailable",
}
EXCEPTION_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.Throttled: "rate_limited",
}


def problem_code(status: int) -> str:
    return STATUS_CODES.get(status, "internal_error" if status >= 500 else "bad_request")


def problem_payload(*, status: int, detail: str = "", instance: str = "", title: str = "", extra: dict | None = None,
                    code: str = "") -> dict:
    """The one builder of problem documents (DRF's handler below, the /api middleware, plain views)."""
    if code not in CODES:  # a raise site's typo must not turn a refusal into a 500
        if code:
            log.error("Unknown problem code %r: add it to apps.core.errors.CODES (and docs/api.md)", code)
        code = problem_code(status)
    payload = {
        "type": f"https://httpstatuses.io/{status}",
        "title": title or _title(status),
        "status": status,
        "detail": detail or _title(status),
        "instance": instance,
        "code": code,
        "trace_id": current_trace_id(),
    }
    if extra:
        payload.update(extra)
    return payload


def _flatten_errors(data, prefix="") -> dict[str, list[str]]:
    """DRF's nested ValidationError detail → {"field.sub": ["message", ...]}."""
    out: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                name = prefix or "non_field_errors"
            for k, v in _flatten_errors(value, name).items():
                out.setdefault(k, []).extend(v)
    elif isinstance(data, list):
        if all(not isinstance(item, (dict, list)) for item in data):
            out[prefix or "non_field_errors"] = [str(item) for item in data]
        else:
            for index, item in enumerate(data):
                for k, v in _flatten_errors(item, f"{prefix}[{index}]").items():
                    out.setdefault(k, []).extend(v)
    else:
        out[prefix or "non_field_errors"] = [str(data)]
    return out


def problem_exception_handler(exc, context):
    response = _problem_for(exc, context)
    # A refused change is journalled too: the audit app receives this (apps.audit.apps).
    for receiver, outcome in request_refused.send_robust(sender=None, request=context.get("request"), exc=exc,
                                                         response=response):
        if isinstance(outcome, Exception):  # the caller still gets its problem+json answer
            log.error("A receiver of the refusal failed (%s): %r", receiver, outcome)
    return response


def _problem_for(exc, context):
    request = context.get("request")
    instance = request.path if request is not None else ""
    headers = {}

    if isinstance(exc, DomainError):
        extra = {**exc.extra, **({"errors": exc.errors} if exc.errors else {})} or None
        response = _problem(exc.status_code, exc.detail, instance, title=exc.title, extra=extra, code=exc.code)
        for key, value in getattr(exc, "headers", {}).items():  # e.g. Retry-After of a 503
            response[key] = value
        return response

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten_errors(exc.detail)
        fields = ", ".join(sorted(errors))
        return _problem(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"Validation failed for: {fields}." if fields else "Validation failed.",
            instance,
            extra={"errors": errors},
            code="validation_failed",
        )

    if isinstance(exc, exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(int(exc.wait) + 1)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        code = next((c for cls, c in EXCEPTION_CODES.items() if isinstance(exc, cls)), "")
        if not code and isinstance(exc, exceptions.NotFound) and exc.get_codes() in CODES:
            code = exc.get_codes()  # a resource's own, e.g. lablet_instance_not_found (apps.api.views)
        response = _problem(exc.status_code, detail, instance, code=code)
        for key, value in headers.items():
            response[key] = value
        return response

    log.exception("Unhandled API error on %s", instance)
    return _problem(500, "An internal error occurred; quote the trace_id to support.", instance)


def _problem(status_code: int, detail: str, instance: str, *, title: str = "", extra: dict | None = None,
             code: str = "") -> Response:
    payload = problem_payload(status=status_code, detail=detail, instance=instance, title=title, extra=extra, code=code)
    return Response(payload, status=status_code, content_type=PROBLEM_CONTENT_TYPE)
