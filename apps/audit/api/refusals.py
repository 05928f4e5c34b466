"""Refused API calls go into the journal too: a receiver (apps.audit.apps) of the problem+json exception
handler's `request_refused` signal (apps.api.problems), the one place every refusal of every DRF view passes
through.

Journalled: POST, PUT, PATCH and DELETE of an authenticated principal answered with a problem (403, 404,
409, 422, 423, 502, 503, ...). Not journalled: reads; 401 and 429, which anyone can provoke without
credentials or at any rate (they would let anyone flood the journal; the request log has them with their
trace_id); unexpected errors (500, logged with their trace_id: the database may be what failed); and the
refusals of anonymous callers (the remote-lab API from SESSION_ANONYMOUS_NETWORKS): anyone there can send
`DELETE /api/remote-lab/session/<random>` in a loop, so they are counted in the metric
`labmanager_api_anonymous_refusals_total{method, status}` instead (per process, like django-prometheus's
counters; the request log has each one).
"""

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404
from prometheus_client import Counter
from rest_framework.exceptions import APIException

from apps.api.actors import actor_for
from apps.audit.services import audit_api_refusal
from apps.core.errors import DomainError

log = logging.getLogger(__name__)
CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_JOURNALLED = frozenset({401, 429})
REFUSALS = (DomainError, APIException, Http404, PermissionDenied)
# Labels: the method (4 values) and the status, never the path (ids in it: unbounded series).
ANONYMOUS_REFUSALS = Counter(
    "labmanager_api_anonymous_refusals",
    "Refused state-changing API calls of anonymous callers, not journalled (per process)",
    ["method", "status"],
)


def _authenticated(request) -> bool:
    try:  # a refusal before DRF authenticated (406) makes request.user authenticate now: it may raise
        return bool(request.user and request.user.is_authenticated)
    except Exception:
        return False


def journal_refusal(request, exc, response) -> None:
    """Write one `api_call.refused` event for a refused state-changing call of an authenticated principal;
    count an anonymous caller's in ANONYMOUS_REFUSALS. Never raises: the caller still gets its problem+json
    answer if the journal cannot be written (the failure is logged)."""
    if request is None or response is None or request.method not in CHANGING_METHODS:
        return
    if response.status_code < 400 or response.status_code in NOT_JOURNALLED or not isinstance(exc, REFUSALS):
        return
    if not _authenticated(request):
        ANONYMOUS_REFUSALS.labels(method=request.method, status=str(response.status_code)).inc()
        return
    try:
        problem = response.data if isinstance(response.data, dict) else {}
        match = getattr(request, "resolver_match", None)
        audit_api_refusal(
            actor=actor_for(request), method=request.method, path=request.path,
            view=match.view_name if match else "", status=response.status_code,
            title=str(problem.get("title", "")), detail=str(problem.get("detail", "")),
            errors=problem.get("errors"),
        )
    except Exception:
        log.warning("Could not journal the refused call %s %s", request.method, request.path, exc_info=True)


def journal_page_refusal(request, exc: DomainError) -> None:
    """A change refused on a dashboard page or by an admin action because of who asked (a service's 403, e.g.
    another instructor's lablet definition): one `api_call.refused` event, as the API's refusal writes, with the
    page's path and URL name. Never raises (the page still answers)."""
    try:
        match = getattr(request, "resolver_match", None)
        audit_api_refusal(
            actor=request.user.get_username(), method=request.method, path=request.path,
            view=match.view_name if match else "", status=exc.status_code, title=exc.title, detail=exc.detail,
            errors=exc.errors or None,
        )
    except Exception:
        log.warning("Could not journal the refused page call %s %s", request.method, request.path, exc_info=True)
