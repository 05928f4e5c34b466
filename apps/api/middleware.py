"""problem+json for every error under /api, also for what never reaches DRF."""

import logging

from asgiref.sync import iscoroutinefunction
from django.http import JsonResponse

from apps.api.problems import problem_payload
from apps.core.middleware import TRACE_HEADER, SyncAndAsyncMiddleware, current_trace_id

error_log = logging.getLogger("labmanager.errors")


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def unknown_path_detail(path: str) -> str:
    """The `detail` of a 404 for a path with no view (also what a view says that hides itself)."""
    return f"No API resource at {path}."


class ApiProblemMiddleware(SyncAndAsyncMiddleware):
    """Under /api nothing leaves as HTML: Django's own 404/403/500 pages become problem+json.

    DRF views already answer problem+json through `problem_exception_handler`; this catches
    what never reaches DRF (unknown paths, CSRF failures, uncaught exceptions).
    """

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self._problem_for(request, self.get_response(request))

    async def __acall__(self, request):
        return self._problem_for(request, await self.get_response(request))

    @staticmethod
    def _problem_for(request, response):
        if not is_api_path(request.path) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith(("application/problem+json", "text/event-stream")):
            return response
        detail = {
            404: unknown_path_detail(request.path),
            405: f"Method {request.method} is not allowed on {request.path}.",
            403: "Forbidden.",
        }.get(response.status_code, "")
        problem = problem_response(request, response.status_code, detail=detail)
        if response.has_header("Allow"):  # a 405 says which methods are (RFC 9110)
            problem["Allow"] = response["Allow"]
        return problem

    def process_exception(self, request, exception):
        if not is_api_path(request.path):
            return None
        error_log.exception("Unhandled error on %s %s", request.method, request.path)
        return problem_response(request, 500, detail="An internal error occurred; quote the trace_id to support.")


def problem_response(request, status: int, *, detail: str = "", extra: dict | None = None) -> JsonResponse:
    payload = problem_payload(status=status, detail=detail, instance=request.path, extra=extra)
    response = JsonResponse(payload, status=status, content_type="application/problem+json")
    response[TRACE_HEADER] = current_trace_id()
    return response
