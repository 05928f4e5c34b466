from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.workers import selectors, services
from apps.workers.api.serializers import WorkerCreateSerializer, WorkerSerializer
from apps.workers.models import WorkerStatus
from labmanager.api.actors import actor_for
from labmanager.api.idempotency import idempotent
from labmanager.api.lists import csv_param, envelope_serializer, list_parameters
from labmanager.api.roles import ADMIN, INSTRUCTOR, OPERATOR
from labmanager.api.schema import READ_ERRORS, WRITE_ERRORS
from labmanager.api.views import ResourceViewSet

SORT_FIELDS = {"created_at": "created_at", "name": "name", "status": "status", "updated_at": "updated_at"}
WorkerList = envelope_serializer("WorkerList", "workers", WorkerSerializer)
WORKER_FILTERS = [OpenApiParameter("status", OpenApiTypes.STR, description="Comma-separated statuses.")]


@extend_schema_view(
    list=extend_schema(parameters=list_parameters(SORT_FIELDS, *WORKER_FILTERS), responses={200: WorkerList, **READ_ERRORS}),
    retrieve=extend_schema(responses={200: WorkerSerializer, **READ_ERRORS}),
    create=extend_schema(request=WorkerCreateSerializer, responses={201: WorkerSerializer, **WRITE_ERRORS}),
    destroy=extend_schema(
        summary="Terminate a worker", responses={200: WorkerSerializer, **WRITE_ERRORS}
    ),
)
class WorkerViewSet(ResourceViewSet):
    """CML workers (EC2 instances running CML). Operators and admins manage them; instructors read."""

    serializer_class = WorkerSerializer
    list_key = "workers"
    sort_fields = SORT_FIELDS
    read_roles = (ADMIN, OPERATOR, INSTRUCTOR)
    write_roles = (ADMIN, OPERATOR)

    def get_queryset(self):
        return selectors.worker_list(filters={"include_terminated": True})

    def list(self, request):
        filters = {
            "status": csv_param(request, "status", choices=WorkerStatus.values),
            "include_terminated": self.list_params()["include_terminated"],
        }
        return self.list_response(selectors.worker_list(filters=filters))

    def retrieve(self, request, id=None):
        return Response(WorkerSerializer(self.get_object()).data)

    def create(self, request):
        def perform():
            data = WorkerCreateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            worker = services.worker_create(actor=actor_for(request), **data.validated_data)
            return Response(WorkerSerializer(worker).data, status=status.HTTP_201_CREATED)

        return idempotent(perform, request)

    def destroy(self, request, id=None):
        worker = services.worker_terminate(worker=self.get_object(), actor=actor_for(request))
        return Response(WorkerSerializer(worker).data)

    @extend_schema(request=None, responses={200: WorkerSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"])
    def start(self, request, id=None):
        worker = services.worker_start(worker=self.get_object(), actor=actor_for(request))
        return Response(WorkerSerializer(worker).data)

    @extend_schema(request=None, responses={200: WorkerSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"])
    def stop(self, request, id=None):
        worker = services.worker_stop(worker=self.get_object(), actor=actor_for(request))
        return Response(WorkerSerializer(worker).data)
