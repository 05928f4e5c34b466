from functools import partial

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.workers import selectors, services
from apps.workers.api.serializers import (
    WorkerCreateSerializer,
    WorkerLicenseSerializer,
    WorkerSerializer,
    WorkerTemplateSerializer,
    WorkerUpdateSerializer,
)
from apps.workers.models import WorkerStatus
from apps.api.actors import actor_for
from apps.api.idempotency import idempotent
from apps.api.lists import csv_param, envelope_serializer, list_parameters
from apps.api.pending import pending_response
from apps.api.permissions import WORKER_TEMPLATES, WORKERS
from apps.api.schema import READ_ERRORS, WRITE_ERRORS, problem_responses
from apps.api.views import ResourceViewSet

SORT_FIELDS = {"created_at": "created_at", "name": "name", "status": "status", "updated_at": "updated_at"}
WorkerList = envelope_serializer("WorkerList", "workers", WorkerSerializer)
WorkerTemplateList = envelope_serializer("WorkerTemplateList", "worker_templates", WorkerTemplateSerializer)
WORKER_FILTERS = [OpenApiParameter("status", OpenApiTypes.STR, description="Comma-separated statuses.")]
UPSTREAM_ERRORS = {**WRITE_ERRORS, **problem_responses(s502="EC2 or CML failed; the attempt is in the audit journal.")}
FORCE = OpenApiParameter("force", OpenApiTypes.BOOL, description="Terminate even if live lablet instances run there.")


def _flag(value) -> bool:
    return serializers.BooleanField().to_internal_value(value) if value not in (None, "") else False


@extend_schema_view(
    list=extend_schema(parameters=list_parameters(SORT_FIELDS, *WORKER_FILTERS), responses={200: WorkerList, **READ_ERRORS}),
    retrieve=extend_schema(responses={200: WorkerSerializer, **READ_ERRORS}),
    create=extend_schema(request=WorkerCreateSerializer, responses={201: WorkerSerializer, **UPSTREAM_ERRORS}),
    partial_update=extend_schema(
        summary="Override a worker's declared capacity",
        request=WorkerUpdateSerializer,
        responses={200: WorkerSerializer, **WRITE_ERRORS},
    ),
    destroy=extend_schema(
        summary="Terminate a worker",
        description="202 with the worker (`status: terminated`, `Location` its URL) when EC2 was asked to terminate "
                    "its instance, which shuts down in the background; 204 when the worker had no EC2 instance "
                    "(its launch failed). docs/api.md#deletes.",
        parameters=[FORCE],
        responses={202: WorkerSerializer, 204: OpenApiResponse(description="Terminated: it had no EC2 instance."),
                   **UPSTREAM_ERRORS},
    ),
)
class WorkerViewSet(ResourceViewSet):
    """CML workers (EC2 instances running CML). Operators and admins manage them; instructors read."""

    serializer_class = WorkerSerializer
    list_key = "workers"
    sort_fields = SORT_FIELDS
    policy = WORKERS
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

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

    def partial_update(self, request, id=None):
        worker = self.get_object()
        data = WorkerUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        worker = services.worker_update_capacity(worker=worker, actor=actor_for(request), capacity=data.validated_data["capacity"])
        return Response(WorkerSerializer(worker).data)

    def destroy(self, request, id=None):
        force = _flag(request.query_params.get("force"))
        worker = services.worker_terminate(worker=self.get_object(), actor=actor_for(request), force=force)
        if not worker.aws_instance_id:  # nothing goes on in the background
            return Response(status=status.HTTP_204_NO_CONTENT)
        # The record is terminated; EC2 shuts the instance down in the background (docs/api.md#deletes).
        response = Response(WorkerSerializer(worker).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = request.build_absolute_uri(f"/api/workers/{worker.public_id}")
        return response

    def _verb(self, service, **kwargs):
        worker = service(worker=self.get_object(), actor=actor_for(self.request), **kwargs)
        return Response(WorkerSerializer(worker).data)

    @extend_schema(request=None, responses={200: WorkerSerializer, **UPSTREAM_ERRORS})
    @action(detail=True, methods=["post"])
    def start(self, request, id=None):
        return self._verb(services.worker_start)

    @extend_schema(request=None, responses={200: WorkerSerializer, **UPSTREAM_ERRORS})
    @action(detail=True, methods=["post"])
    def stop(self, request, id=None):
        return self._verb(services.worker_stop)

    @extend_schema(
        request=None,
        parameters=[OpenApiParameter("force", OpenApiTypes.BOOL, description=(
            "Also hand its scheduled (not yet started) lablet instances back to the scheduler for "
            "placement elsewhere."))],
        responses={200: WorkerSerializer, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def drain(self, request, id=None):
        """No new placements on this worker; what runs there keeps running. With force=true, its
        scheduled instances are placed again on other workers."""
        return self._verb(services.worker_drain, force=_flag(request.query_params.get("force")))

    @extend_schema(request=None, responses={200: WorkerSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"])
    def undrain(self, request, id=None):
        return self._verb(services.worker_undrain)

    @extend_schema(request=None, responses={200: WorkerSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"], url_path="sync")
    def sync_now(self, request, id=None):
        """Check this worker's CML now (health, licence, load)."""
        worker = self.get_object()
        task_id = services.worker_cml_health_begin(worker=worker, actor=actor_for(request))
        # CML is asked by a q task, awaited by the async view in apps.workers.api.urls (`awaiting`)
        return pending_response(finish=partial(services.worker_cml_health_finish, task_id=task_id, worker_pk=worker.pk),
                                data=lambda worker: WorkerSerializer(worker).data,
                                give_up=lambda: None)  # the task runs anyway: the check is then recorded

    @extend_schema(methods=["POST"], request=WorkerLicenseSerializer, responses={200: WorkerSerializer, **UPSTREAM_ERRORS})
    @extend_schema(methods=["DELETE"], request=None,
                   responses={204: OpenApiResponse(description="Deregistered."), **UPSTREAM_ERRORS})
    @action(detail=True, methods=["post", "delete"])
    def license(self, request, id=None):
        """Register the worker's CML with Smart Licensing (POST), or deregister it (DELETE)."""
        if request.method == "DELETE":  # done when it answers: 204, as every finished DELETE
            services.worker_license_deregister(worker=self.get_object(), actor=actor_for(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = WorkerLicenseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._verb(services.worker_license_register, **data.validated_data)


@extend_schema_view(
    list=extend_schema(parameters=list_parameters({"created_at": "created_at", "name": "name"}),
                       responses={200: WorkerTemplateList, **READ_ERRORS}),
    retrieve=extend_schema(responses={200: WorkerTemplateSerializer, **READ_ERRORS}),
    create=extend_schema(request=WorkerTemplateSerializer, responses={201: WorkerTemplateSerializer, **WRITE_ERRORS}),
    update=extend_schema(request=WorkerTemplateSerializer, responses={200: WorkerTemplateSerializer, **WRITE_ERRORS}),
)
class WorkerTemplateViewSet(ResourceViewSet):
    """How new workers are launched. Operators and admins."""

    serializer_class = WorkerTemplateSerializer
    list_key = "worker_templates"
    sort_fields = {"created_at": "created_at", "name": "name"}
    policy = WORKER_TEMPLATES
    http_method_names = ["get", "post", "put", "head", "options"]

    def get_queryset(self):
        return selectors.worker_template_list()

    def list(self, request):
        return self.list_response(selectors.worker_template_list())

    def retrieve(self, request, id=None):
        return Response(WorkerTemplateSerializer(self.get_object()).data)

    def create(self, request):
        def perform():
            data = WorkerTemplateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            template = services.worker_template_create(actor=actor_for(request), data=data.validated_data)
            return Response(WorkerTemplateSerializer(template).data, status=status.HTTP_201_CREATED)

        return idempotent(perform, request)

    def update(self, request, id=None):
        template = self.get_object()
        data = WorkerTemplateSerializer(template, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        template = services.worker_template_update(template=template, actor=actor_for(request), data=data.validated_data)
        return Response(WorkerTemplateSerializer(template).data)
