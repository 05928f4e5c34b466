"""The scheduler's endpoints: roster bookings, the preview (dry run), the status, priorities.

Plain APIViews with the same role checks as the viewsets (each names its policy in apps.api.permissions).
"""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.lablets import selectors
from apps.lablets.api.scheduler_serializers import (
    BulkProblemSerializer,
    LabletInstanceBulkCreateSerializer,
    LabletInstanceBulkResultSerializer,
    LabletInstancePrioritySerializer,
    SchedulerPreviewRequestSerializer,
    SchedulerPreviewSerializer,
    SchedulerStatusSerializer,
)
from apps.lablets.api.serializers import LabletInstanceSerializer
from apps.lablets.models import LabletInstance
from apps.lablets.services.bulk import lablet_booking_resolve, lablet_instances_create_bulk
from apps.lablets.services.student_links import student_link_create, student_link_expires_at, student_link_path
from apps.lablets.services.scheduling import lablet_instance_set_priority, scheduler_preview, scheduler_status
from apps.api.actors import actor_for
from apps.api.idempotency import idempotent
from apps.api.permissions import LABLET_INSTANCE_WRITES, SCHEDULER, Policy, RolePermission
from apps.api.schema import COMMON_ERRORS, PROBLEM_JSON, WRITE_ERRORS, problem_responses


class RoleAPIView(APIView):
    permission_classes = [RolePermission]
    policy: Policy | None = None


def _represent_bulk(outcome: dict) -> dict:
    """The roster's answer. The instances are represented from one `.values()` query (the list pages' fast
    path); the results by hand, not through LabletInstanceBulkResultSerializer, so that an error keeps
    every extension member of its problem (`limit`, `reason`, ...), which a declared serializer would drop."""
    booked = [row["instance"].pk for row in outcome["results"] if row["instance"] is not None]
    rows = selectors.lablet_instance_rows(LabletInstance.objects.filter(pk__in=booked))
    represented = {row["id"]: LabletInstanceSerializer.represent_row(row) for row in rows}
    return {
        **LabletInstanceBulkResultSerializer({**outcome, "results": []}).data,
        "results": [
            {**row, "instance": represented[row["instance"].pk] if row["instance"] is not None else None}
            for row in outcome["results"]
        ],
    }


def _with_links(request, body: dict) -> dict:
    """Each booked owner's result with a new student link (URL once), the others with null."""
    ids = [row["instance"]["id"] for row in body["results"] if row.get("instance")]
    instances = LabletInstance.objects.in_bulk(ids, field_name="public_id")
    results = []
    for row in body["results"]:
        link = None
        if row.get("instance"):
            made, raw = student_link_create(instance=instances[row["instance"]["id"]], actor=actor_for(request))
            link = {"url": request.build_absolute_uri(student_link_path(raw)),
                    "expires_at": student_link_expires_at(made).isoformat()}
        results.append({**row, "student_link": link})
    return {**body, "results": results}


class LabletInstanceBulkView(RoleAPIView):
    """Book one definition and timeslot for a class roster."""

    policy = LABLET_INSTANCE_WRITES  # read roles too: a GET is 405, not 403

    @extend_schema(
        operation_id="lablet_instances_bulk_create",
        tags=["lablet-instances"],
        request=LabletInstanceBulkCreateSerializer,
        responses={
            201: OpenApiResponse(LabletInstanceBulkResultSerializer, description="Every owner was booked."),
            200: OpenApiResponse(LabletInstanceBulkResultSerializer,
                                 description="Some owners were not booked: see `results[].error` and `totals.failed`."),
            **COMMON_ERRORS,
            **problem_responses(s422="Bad body, unknown or deprecated definition, or a bad timeslot (nothing booked)."),
            (409, PROBLEM_JSON): OpenApiResponse(
                BulkProblemSerializer, description="all_or_nothing and an owner failed: nothing was booked."),
        },
    )
    def post(self, request):
        data = LabletInstanceBulkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        include_links = data.validated_data.pop("include_links")

        def perform():
            outcome = lablet_instances_create_bulk(actor=actor_for(request), user=request.user, **data.validated_data)
            code = status.HTTP_201_CREATED if outcome["totals"]["failed"] == 0 else status.HTTP_200_OK
            return Response(_represent_bulk(outcome), status=code)

        response = idempotent(perform, request)
        if include_links and response.status_code in (200, 201):
            # After the (stored) answer: a replay keeps no token at rest, and makes new links instead.
            response.data = _with_links(request, response.data)
            response["Cache-Control"] = "no-store"
        return response


class SchedulerPreviewView(RoleAPIView):
    """Dry run: where instances would land, and why every other worker would not take one."""

    policy = SCHEDULER

    @extend_schema(
        operation_id="scheduler_preview",
        tags=["scheduler"],
        request=SchedulerPreviewRequestSerializer,
        responses={200: SchedulerPreviewSerializer, **COMMON_ERRORS,
                   **problem_responses(s422="Unknown or deprecated definition, or a bad timeslot.")},
    )
    def post(self, request):
        data = SchedulerPreviewRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        definition, start, end = lablet_booking_resolve(
            definition_id=data.validated_data["definition_id"],
            timeslot_start=data.validated_data["timeslot_start"],
            timeslot_end=data.validated_data.get("timeslot_end"),
        )
        preview = scheduler_preview(definition=definition, start=start, end=end, count=data.validated_data["count"])
        return Response(SchedulerPreviewSerializer(preview).data)


class SchedulerStatusView(RoleAPIView):
    """Queue depth, reservations, usable workers, placements in the last 24 hours."""

    policy = SCHEDULER

    @extend_schema(operation_id="scheduler_status", tags=["scheduler"],
                   responses={200: SchedulerStatusSerializer, **COMMON_ERRORS})
    def get(self, request):
        return Response(SchedulerStatusSerializer(scheduler_status()).data)


class LabletInstancePriorityView(RoleAPIView):
    """Change a PENDING instance's priority (instructors: only the instances they created)."""

    policy = LABLET_INSTANCE_WRITES

    @extend_schema(
        operation_id="lablet_instances_priority",
        tags=["lablet-instances"],
        request=LabletInstancePrioritySerializer,
        responses={200: LabletInstanceSerializer, **WRITE_ERRORS},
    )
    def patch(self, request, id: str):
        instance = selectors.lablet_instance_visible_to(user=request.user).filter(public_id=id).first()
        if instance is None:
            raise Http404
        data = LabletInstancePrioritySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        instance = lablet_instance_set_priority(instance=instance, actor=actor_for(request),
                                                priority=data.validated_data["priority"])
        return Response(LabletInstanceSerializer(instance).data)
