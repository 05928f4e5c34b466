"""Base viewset and the diagnostics endpoints."""

import logging
import uuid

from django.core.cache import cache
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import api_view, authentication_classes, permission_classes, throttle_classes
from rest_framework.response import Response

from apps.api.lists import envelope_response, parse_list_params
from apps.api.permissions import Policy, Public, RolePermission
from apps.api.schema import problem_responses

log = logging.getLogger(__name__)


class ResourceViewSet(viewsets.GenericViewSet):
    """Public ids in URLs, role checks, and the list envelope."""

    permission_classes = [RolePermission]
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[A-Za-z0-9_.-]+"
    list_key = ""
    sort_fields: dict[str, str] = {}
    policy: Policy | None = None  # apps.api.permissions: who may read, who may write

    def get_object(self):
        obj = self.get_queryset().filter(public_id=self.kwargs[self.lookup_url_kwarg]).first()
        if obj is None:  # problem code `<resource>_not_found`: lablet_instances → lablet_instance_not_found
            raise exceptions.NotFound(code=f"{self.list_key.removesuffix('s')}_not_found")
        self.check_object_permissions(self.request, obj)
        return obj

    def list_params(self) -> dict:
        """limit/offset/sort/order/include_terminated, validated once per request (422 on bad values)."""
        if not hasattr(self, "_list_params"):
            self._list_params = parse_list_params(self.request, self.sort_fields)
        return self._list_params

    def list_response(self, queryset, *, represent_page=None):
        params = self.list_params()
        return envelope_response(
            self.request,
            key=self.list_key,
            queryset=queryset,
            serializer_class=self.get_serializer_class(),
            params=params,
            sort_fields=self.sort_fields,
            represent_page=represent_page,
        )


def _reason(error: Exception) -> str:
    """What the public probe says about a failed dependency: never the exception's text (host names,
    addresses, user names, driver messages), which goes to the log with the trace id instead."""
    return "down: timed out" if isinstance(error, TimeoutError) else "down: unavailable"


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    key = f"ready-{uuid.uuid4().hex}"
    cache.set(key, "1", 5)
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return what was stored")
    cache.delete(key)


def _check_channel_layer() -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def roundtrip():
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "ready.check"})
        await layer.receive(channel)

    async_to_sync(roundtrip)()


def _check_q_broker() -> None:
    from django_q.brokers import get_broker

    broker = get_broker()
    if not broker.ping():
        raise RuntimeError("broker did not answer")


READINESS_CHECKS = {
    "database": _check_database,
    "cache": _check_cache,
    "channel_layer": _check_channel_layer,
    "q_broker": _check_q_broker,
}

HealthSerializer = inline_serializer("Health", {"status": serializers.CharField()})
ReadySerializer = inline_serializer(
    "Ready", {"status": serializers.CharField(), "checks": serializers.DictField(child=serializers.CharField())}
)


@extend_schema(tags=["diagnostics"], responses={200: HealthSerializer}, auth=[])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([Public])
@throttle_classes([])
def health(request):
    """Liveness: the process answers. Touches nothing else."""
    return Response({"status": "healthy"})


@extend_schema(tags=["diagnostics"], responses={200: ReadySerializer, **problem_responses(s503="A dependency is down.")}, auth=[])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([Public])
@throttle_classes([])
def ready(request):
    """Readiness: database, cache, channel layer and q broker all answer. A failure is logged in full
    (logger apps.api.views, with the trace id); the answer names only the dependency
    and a generic reason."""
    from apps.api.problems import PROBLEM_CONTENT_TYPE, problem_payload

    checks, down = {}, []
    for name, check in READINESS_CHECKS.items():
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:  # report every failing dependency, not just the first
            log.warning("Readiness check %s failed: %r", name, exc, exc_info=exc)
            checks[name] = _reason(exc)
            down.append(name)
    if down:
        payload = problem_payload(
            status=503, detail=f"Not ready: {', '.join(down)} down.", instance=request.path, extra={"checks": checks}
        )
        # Retry-After: a load balancer or client polls again then (every 503 of the API carries one).
        return Response(payload, status=503, content_type=PROBLEM_CONTENT_TYPE, headers={"Retry-After": "5"})
    return Response({"status": "ready", "checks": checks})
