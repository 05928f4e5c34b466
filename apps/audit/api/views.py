"""The journal over HTTP: list, verify, chain root. Admins and operators only."""

from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit import selectors, services
from apps.audit.api.serializers import (
    AuditEventSerializer,
    AuditListParamsSerializer,
    ChainRootSerializer,
    VerificationSerializer,
)
from apps.api.actors import actor_for
from apps.api.lists import ListParamsSerializer, csv_param, envelope_serializer
from apps.api.permissions import AUDIT, RolePermission
from apps.api.schema import COMMON_ERRORS, problem_responses
from apps.api.views import ResourceViewSet

SORT_FIELDS = {"sequence_num": "sequence_num", "timestamp": "timestamp"}
AuditEventList = envelope_serializer("AuditEventList", "events", AuditEventSerializer)
LIST_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="Page size, 1–1000 (default 50)."),
    OpenApiParameter("offset", OpenApiTypes.INT, description="Events to skip (default 0)."),
    OpenApiParameter("sort", OpenApiTypes.STR, enum=list(SORT_FIELDS), description="Sort field (default sequence_num)."),
    OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"], description="Sort order (default desc: newest first)."),
    OpenApiParameter("from", OpenApiTypes.DATETIME, description="Events at or after this time (ISO 8601)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="Events at or before this time (ISO 8601)."),
    OpenApiParameter("event_type", OpenApiTypes.STR, description="Comma-separated event types, e.g. `worker.drained,audit.verified`."),
    OpenApiParameter("user_id", OpenApiTypes.STR, description="Username of the acting user."),
    OpenApiParameter("resource", OpenApiTypes.STR, description="`type:id` (e.g. `worker:wkr-1a2b`) or a type alone (`worker`)."),
]


class AuditListParams(ListParamsSerializer):
    sort = serializers.CharField(required=False, default="sequence_num")


class AuditEventViewSet(ResourceViewSet):
    """The audit journal, newest first. Only sealed events (linked into the chain, a moment after their
    transaction commits) are listed."""

    serializer_class = AuditEventSerializer
    list_key = "events"
    sort_fields = SORT_FIELDS
    policy = AUDIT

    def get_queryset(self):
        return selectors.audit_event_list(filters={})

    def list_params(self) -> dict:
        if not hasattr(self, "_list_params"):
            params = AuditListParams(data=self.request.query_params, sort_fields=self.sort_fields)
            params.is_valid(raise_exception=True)
            self._list_params = params.validated_data
        return self._list_params

    @extend_schema(summary="Query audit events", parameters=LIST_PARAMETERS, responses={200: AuditEventList, **COMMON_ERRORS,
                   **problem_responses(s422="Invalid filter or paging value.")})
    def list(self, request):
        params = self.list_params()
        filters = AuditListParamsSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        events = selectors.audit_event_list(filters={**filters.validated_data, "event_type": csv_param(request, "event_type")})
        return self.list_response(events)


class AuditVerifyView(APIView):
    permission_classes = [RolePermission]
    policy = AUDIT

    @extend_schema(
        summary="Verify audit chain integrity",
        description=(
            "Recomputes every event's keyed hash and link with the chain keys (from the environment, not the "
            "database), streaming the journal in chunks, then holds the journal against the anchors written "
            "outside the database (AUDIT_ANCHOR_DIR, AUDIT_ANCHOR_BUCKET). Changes nothing in the "
            "journal but one event: the check itself is journalled as `audit.verified` (success = valid). "
            "A large journal takes a while (1,000,000 events: see docs/performance.md); "
            "`manage.py verify_audit` does the same from a shell."
        ),
        request=None,
        responses={200: VerificationSerializer, **COMMON_ERRORS},
    )
    def post(self, request):
        result = services.audit_verify(actor=actor_for(request))
        return Response(VerificationSerializer(asdict(result)).data)


class AuditChainRootView(APIView):
    permission_classes = [RolePermission]
    policy = AUDIT

    @extend_schema(
        summary="Get the current chain root hash",
        description="The hash of the last event, which commits to every event before it, and the last anchor "
                    "written outside the database (`manage.py anchor_audit`, the `audit_anchor` schedule): an "
                    "anchor lets a verification detect a truncated tail or a rewrite by someone with the key.",
        responses={200: ChainRootSerializer, **COMMON_ERRORS},
    )
    def get(self, request):
        return Response(ChainRootSerializer(asdict(selectors.audit_chain_root())).data)
