"""ROOT_URLCONF of the benchmark (`make bench`): the application's routes plus `/api/bench/plain`.

`/api/bench/plain` is the baseline: a plain DRF view on the same server, behind the same
authentication (API key), permission default, throttle and JSON renderer as the real API, that
returns the first page of `GET /api/lablet-instances?limit=50` from memory. The page is built once,
at the first request, with the real selector and serializer; afterwards the view does no database
or serializer work of its own, so the difference between the two endpoints is the cost of the list
(query, count, model instances, serialization, pagination headers).
"""

import threading

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.lablets import selectors
from apps.lablets.api.serializers import LabletInstanceSerializer
from apps.api.permissions import LABLET_INSTANCES
from labmanager.urls import urlpatterns as app_urlpatterns

PAGE_SIZE = 50
_page: dict | None = None
_page_lock = threading.Lock()


def _build_page(request) -> dict:
    """The same body and headers as `GET /api/lablet-instances?limit=50` for this user, built once."""
    queryset = selectors.lablet_instance_list(user=request.user).order_by("-created_at", "-pk")
    total = queryset.count()
    rows = list(queryset[:PAGE_SIZE])
    body = {
        "lablet_instances": LabletInstanceSerializer(rows, many=True).data,
        "total": total,
        "limit": PAGE_SIZE,
        "offset": 0,
    }
    base = request.build_absolute_uri("/api/lablet-instances")
    links = []
    if PAGE_SIZE < total:
        links.append(f'<{base}?limit={PAGE_SIZE}&offset={PAGE_SIZE}>; rel="next"')
    links.append(f'<{base}?limit={PAGE_SIZE}&offset=0>; rel="first"')
    if total:
        links.append(f'<{base}?limit={PAGE_SIZE}&offset={((total - 1) // PAGE_SIZE) * PAGE_SIZE}>; rel="last"')
    return {"body": body, "headers": {"X-Total-Count": str(total), "Link": ", ".join(links)}}


class PlainInstancePageView(APIView):
    """Baseline: DRF's default authentication, permission, throttle and renderer; data from memory."""

    policy = LABLET_INSTANCES  # the same policy as the real list (the default permission refuses a view without one)

    def get(self, request):
        global _page
        if _page is None:
            with _page_lock:
                if _page is None:
                    _page = _build_page(request)
        return Response(_page["body"], headers=_page["headers"])


urlpatterns = [
    path("api/bench/plain", PlainInstancePageView.as_view(), name="bench-plain"),
    *app_urlpatterns,
]
