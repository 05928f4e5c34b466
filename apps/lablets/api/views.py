from functools import partial

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.lablets import selectors, services
from apps.lablets.api.serializers import (
    GradingResultSerializer,
    LabletDefinitionSerializer,
    LabletDefinitionSyncSerializer,
    LabletDefinitionWriteSerializer,
    LabletInstanceCreateSerializer,
    LabletInstanceExtendSerializer,
    LabletInstanceSerializer,
)
from apps.lablets.models import InstanceStatus
from apps.lablets.services.awaited import (
    PendingTask,
    lablet_definition_sync_begin,
    lablet_definition_sync_finish,
    lablet_instance_start_collection_begin,
    lablet_instance_task_finish,
    lablet_instance_terminate_begin,
)
from apps.lablets.services.instances import lablet_instance_record_activity, lablet_instance_record_grading
from apps.lablets.api.student_link_serializers import (
    StudentLinkCreatedSerializer,
    StudentLinkCreateSerializer,
    StudentLinkSerializer,
)
from apps.lablets.services.student_links import (
    student_link_create,
    student_link_current,
    student_link_path,
    student_link_revoke,
)
from apps.api.actors import actor_for
from apps.api.roles import ADMIN, has_role
from apps.api.idempotency import idempotent
from apps.api.lists import csv_param, envelope_serializer, list_parameters
from apps.api.pending import pending_response
from apps.api.permissions import LABLET_DEFINITIONS, LABLET_INSTANCES
from apps.api.schema import READ_ERRORS, WRITE_ERRORS, problem_responses
from apps.api.views import ResourceViewSet

NOT_OWNER_403 = "Your role does not allow this, or the definition is not yours (its owner or an admin changes it)."
OWNED_WRITE_ERRORS = {**WRITE_ERRORS, **problem_responses(s403=NOT_OWNER_403)}
SYNC_ERRORS = {**WRITE_ERRORS, **problem_responses(
    s403=f"{NOT_OWNER_403[:-1]}; or the lab is neither the definition's reference lab nor the CML lab of a lablet "
         "instance you can see.",
    s502="CML failed.")}

DEFINITION_SORT = {"created_at": "created_at", "updated_at": "updated_at", "name": "name", "version": "version"}
INSTANCE_SORT = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "timeslot_start": "timeslot_start",
    "timeslot_end": "timeslot_end",
    "status": "status",
    "owner_id": "owner_id",
    "priority": "priority",
}
DefinitionList = envelope_serializer("LabletDefinitionList", "lablet_definitions", LabletDefinitionSerializer)
InstanceList = envelope_serializer("LabletInstanceList", "lablet_instances", LabletInstanceSerializer)
INSTANCE_FILTERS = [
    OpenApiParameter("status", OpenApiTypes.STR, description="Comma-separated statuses."),
    OpenApiParameter("owner_id", OpenApiTypes.STR),
    OpenApiParameter("definition_id", OpenApiTypes.STR),
    OpenApiParameter("worker_id", OpenApiTypes.STR),
]


@extend_schema_view(
    list=extend_schema(
        parameters=list_parameters(DEFINITION_SORT, OpenApiParameter("name", OpenApiTypes.STR)),
        responses={200: DefinitionList, **READ_ERRORS},
    ),
    retrieve=extend_schema(responses={200: LabletDefinitionSerializer, **READ_ERRORS}),
    create=extend_schema(request=LabletDefinitionWriteSerializer, responses={201: LabletDefinitionSerializer, **WRITE_ERRORS}),
    update=extend_schema(
        request=LabletDefinitionWriteSerializer(partial=True),
        description="Any subset of the create fields; omitted fields keep their value. Only the definition's "
        "owner or an admin (403 otherwise).",
        responses={200: LabletDefinitionSerializer, **OWNED_WRITE_ERRORS},
    ),
    destroy=extend_schema(description="Only the definition's owner or an admin (403 otherwise).",
                          responses={204: None, **OWNED_WRITE_ERRORS}),
)
class LabletDefinitionViewSet(ResourceViewSet):
    """Lab templates, a catalogue every role reads. Instructors create them and change their own (403 on
    another's); admins change all; operators read."""

    serializer_class = LabletDefinitionSerializer
    list_key = "lablet_definitions"
    sort_fields = DEFINITION_SORT
    policy = LABLET_DEFINITIONS

    def get_queryset(self):
        return selectors.lablet_definition_list()

    def list(self, request):
        return self.list_response(selectors.lablet_definition_list(filters={"name": request.query_params.get("name")}))

    def retrieve(self, request, id=None):
        return Response(LabletDefinitionSerializer(self.get_object()).data)

    def create(self, request):
        def perform():
            data = LabletDefinitionWriteSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            definition = services.lablet_definition_create(
                actor=actor_for(request), user=request.user, data=data.validated_data,
                may_trust=has_role(request.user, ADMIN),
            )
            return Response(LabletDefinitionSerializer(definition).data, status=status.HTTP_201_CREATED)

        return idempotent(perform, request)

    def update(self, request, id=None):
        definition = self.get_object()
        data = LabletDefinitionWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        definition = services.lablet_definition_update(
            definition=definition, user=request.user, actor=actor_for(request), data=data.validated_data,
            may_trust=has_role(request.user, ADMIN),
        )
        return Response(LabletDefinitionSerializer(definition).data)

    def destroy(self, request, id=None):
        services.lablet_definition_delete(definition=self.get_object(), user=request.user, actor=actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=LabletDefinitionSyncSerializer,
        responses={200: LabletDefinitionSerializer, **SYNC_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def sync(self, request, id=None):
        """Pull the topology back from a CML lab (`lab_id` on `worker_id`, or the definition's reference lab):
        updates cml_lab_yaml and its content_hash; the lab becomes the reference. Only from the reference lab or
        the CML lab of a lablet instance the caller sees (403 otherwise, CML not asked)."""
        data = LabletDefinitionSyncSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pending = lablet_definition_sync_begin(definition=self.get_object(), user=request.user,
                                               actor=actor_for(request), may_trust=has_role(request.user, ADMIN),
                                               **data.validated_data)
        # CML is asked by a q task, awaited by the async view in apps.lablets.api.urls (`awaiting`)
        return pending_response(finish=partial(lablet_definition_sync_finish, pending=pending),
                                data=lambda definition: LabletDefinitionSerializer(definition).data,
                                give_up=lambda: None)  # the task runs anyway: the sync is then done


@extend_schema_view(
    list=extend_schema(
        parameters=list_parameters(INSTANCE_SORT, *INSTANCE_FILTERS), responses={200: InstanceList, **READ_ERRORS}
    ),
    retrieve=extend_schema(responses={200: LabletInstanceSerializer, **READ_ERRORS}),
    create=extend_schema(request=LabletInstanceCreateSerializer, responses={201: LabletInstanceSerializer, **WRITE_ERRORS}),
)
class LabletInstanceViewSet(ResourceViewSet):
    """Lab instances for students. Instructors see and act on the ones they created; admins on all."""

    serializer_class = LabletInstanceSerializer
    list_key = "lablet_instances"
    sort_fields = INSTANCE_SORT
    policy = LABLET_INSTANCES

    def get_queryset(self):
        return selectors.lablet_instance_visible_to(user=self.request.user)

    def list(self, request):
        filters = {
            "status": csv_param(request, "status", choices=InstanceStatus.values),
            "include_terminated": self.list_params()["include_terminated"],
            "owner_id": request.query_params.get("owner_id"),
            "definition_id": request.query_params.get("definition_id"),
            "worker_id": request.query_params.get("worker_id"),
        }
        return self.list_response(
            selectors.lablet_instance_list(user=request.user, filters=filters),
            represent_page=lambda page: [
                LabletInstanceSerializer.represent_row(row) for row in selectors.lablet_instance_rows(page)
            ],
        )

    def retrieve(self, request, id=None):
        return Response(LabletInstanceSerializer(self.get_object()).data)

    def create(self, request):
        def perform():
            data = LabletInstanceCreateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            instance = services.lablet_instance_create(actor=actor_for(request), user=request.user, **data.validated_data)
            return Response(LabletInstanceSerializer(instance).data, status=status.HTTP_201_CREATED)

        return idempotent(perform, request)

    def _verb(self, service, **kwargs):
        instance = service(instance=self.get_object(), actor=actor_for(self.request), **kwargs)
        return Response(LabletInstanceSerializer(instance).data)

    def _awaited_verb(self, begin):
        """A verb whose long part is a q task, awaited by the async view in apps.lablets.api.urls (`awaiting`)."""
        outcome = begin(instance=self.get_object(), actor=actor_for(self.request))
        if isinstance(outcome, PendingTask):
            return pending_response(finish=partial(lablet_instance_task_finish, pending=outcome),
                                    data=lambda instance: LabletInstanceSerializer(instance).data,
                                    give_up=lambda: None)  # the task runs anyway (else the tick does its work)
        return Response(LabletInstanceSerializer(outcome).data)

    @extend_schema(
        request=None,
        description="Extracts every booted node's configuration through CML into the instance's artifacts and "
        "moves it to collecting. 502 (and still running) when CML fails.",
        responses={200: LabletInstanceSerializer, **problem_responses(s502="CML failed; the instance is still running."),
                   **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="start-collection")
    def start_collection(self, request, id=None):
        return self._awaited_verb(lablet_instance_start_collection_begin)

    @extend_schema(request=None, responses={200: LabletInstanceSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"], url_path="start-grading")
    def start_grading(self, request, id=None):
        return self._verb(services.lablet_instance_start_grading)

    @extend_schema(request=LabletInstanceExtendSerializer, responses={200: LabletInstanceSerializer, **WRITE_ERRORS})
    @action(detail=True, methods=["post"])
    def extend(self, request, id=None):
        data = LabletInstanceExtendSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._verb(services.lablet_instance_extend, **data.validated_data)

    @extend_schema(
        request=GradingResultSerializer,
        description="Record a grader's result for a grading instance (409 in any other state).",
        responses={200: LabletInstanceSerializer, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="grading-result")
    def grading_result(self, request, id=None):
        data = GradingResultSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._verb(lablet_instance_record_grading, **data.validated_data)

    @extend_schema(request=None, responses={204: None, **WRITE_ERRORS})
    @action(detail=True, methods=["post"])
    def activity(self, request, id=None):
        """The student is using the lab: pushes the definition's idle timeout out (a heartbeat; 204)."""
        lablet_instance_record_activity(instance=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        description="Ends the instance from any state. Without a lab it is terminated at once; with one the "
        "teardown (stop, archive to S3, delete the lab) runs before the answer as far as it can. An answer in "
        "stopping, stopped or archived means a step is left (CML unreachable, or another process is in the "
        "middle of one): the lifecycle tick finishes it (see lifecycle_step and last_error).",
        responses={200: LabletInstanceSerializer, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def terminate(self, request, id=None):
        return self._awaited_verb(lablet_instance_terminate_begin)

    @extend_schema(
        methods=["GET"], summary="Whether the instance has a student link (never its token)",
        responses={200: StudentLinkSerializer, **READ_ERRORS},
    )
    @extend_schema(
        methods=["POST"], summary="Create or rotate the student link (its URL is in this answer only)",
        description="Makes a new link; an existing one stops working (rotation). The answer carries the URL "
        "once, with `Cache-Control: no-store`; only the token's SHA-256 is kept.",
        request=StudentLinkCreateSerializer, responses={201: StudentLinkCreatedSerializer, **WRITE_ERRORS},
    )
    @extend_schema(
        methods=["DELETE"], summary="Revoke the student link (204, also when there was none)",
        request=None, responses={204: None, **WRITE_ERRORS},
    )
    @action(detail=True, methods=["get", "post", "delete"], url_path="student-link")
    def student_link(self, request, id=None):
        """The student's own link to this instance: `/s/<token>` opens the student page of this instance and
        nothing else, until revoked, rotated, expired or the instance is terminated (docs/api.md#student-links)."""
        instance = self.get_object()
        if request.method == "GET":
            return Response(StudentLinkSerializer.describe(instance, student_link_current(instance=instance)))
        if request.method == "DELETE":
            student_link_revoke(instance=instance, actor=actor_for(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = StudentLinkCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        link, raw = student_link_create(instance=instance, actor=actor_for(request), **data.validated_data)
        body = {**StudentLinkSerializer.describe(instance, link),
                "url": request.build_absolute_uri(student_link_path(raw))}
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response
