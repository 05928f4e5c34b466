"""/api/remote-lab: the seed's session contract (paths, bodies, status codes), one plain APIView per path.

Views parse input, call one service or selector and render; errors are DomainErrors → problem+json
whose `detail` is the seed's message ("Session not found", "Session is not active", ...)."""

import time
from functools import partial

from django.conf import settings
from django.http import HttpResponseNotFound
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.sessions import selectors, services, shutdown
from apps.sessions.api.access import RemoteLabAccess, RemoteLabRateThrottle, RemoteLabSchema, client_ip, principal_for
from apps.sessions.api.serializers import (
    AcquireRequestSerializer,
    AcquireResponseSerializer,
    ActiveSessionResponseSerializer,
    CreateSessionQuerySerializer,
    CreateSessionResponseSerializer,
    DebugHealthSerializer,
    DestroyLabQuerySerializer,
    DeviceInfoSerializer,
    LabStatusSerializer,
    SessionStatusResponseSerializer,
)
from apps.sessions.models import LabStatus
from apps.sessions.services import storage
from apps.api.pending import awaiting, pending_response
from apps.api.permissions import Public, privileged
from apps.api.schema import problem_responses
from apps.core.errors import NotFound, ValidationFailed

STARTED = time.time()
SESSION_HEADER = "X-Session-ID"
SESSION_ID_HEADER = OpenApiParameter(SESSION_HEADER, OpenApiTypes.UUID, OpenApiParameter.HEADER, required=True,
                                     description="The session_id returned by POST /session.")
SESSION_ID_PATH = OpenApiParameter("session_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
POOL_QUERY = OpenApiParameter("pool", OpenApiTypes.STR, description="Session pool (default: SESSION_DEFAULT_POOL).")
ACCESS_ERRORS = problem_responses(
    s401="No credentials from a network where anonymous clients are not allowed, or a bad key.",
    s429="Rate limit exceeded (SESSION_API_RATE_LIMIT).",
)
UNKNOWN = problem_responses(s404="Session not found (unknown, ended, or not yours).")
LAB_GATE = {**ACCESS_ERRORS, **problem_responses(
    s404="Session not found; or no lab running.", s422="X-Session-ID missing.", s423="Session is not active.")}


def _session_header(request) -> str:
    value = request.headers.get(SESSION_HEADER)
    if not value:
        raise ValidationFailed("The X-Session-ID header is required.", errors={SESSION_HEADER: ["This header is required."]})
    return value


def _client_ip(request) -> str | None:
    return client_ip(request.META.get("REMOTE_ADDR"))


class RemoteLabView(APIView):
    permission_classes = [RemoteLabAccess]
    throttle_classes = [RemoteLabRateThrottle]
    schema = RemoteLabSchema()

    def permission_denied(self, request, message=None, code=None):
        if request.authenticators and not request.successful_authenticator:
            raise exceptions.NotAuthenticated(detail=message)  # 401 with WWW-Authenticate, and our reason
        super().permission_denied(request, message=message, code=code)


class SessionCreateView(RemoteLabView):
    @extend_schema(
        summary="Create a session (join the pool's FIFO queue)",
        parameters=[POOL_QUERY],
        request=None,
        responses={201: CreateSessionResponseSerializer, **ACCESS_ERRORS, **problem_responses(
            s422="Unknown pool.", s503="The pool's queue is full (Retry-After says when to retry).")},
    )
    def post(self, request):
        query = CreateSessionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        session = services.session_create(principal=principal_for(request), pool_name=query.validated_data.get("pool"),
                                          client_ip=_client_ip(request))
        return Response(CreateSessionResponseSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(RemoteLabView):
    @extend_schema(
        summary="Poll a session (also a keep-alive)",
        parameters=[SESSION_ID_PATH],
        responses={200: SessionStatusResponseSerializer, **ACCESS_ERRORS, **UNKNOWN},
    )
    def get(self, request, session_id):
        principal = principal_for(request)
        session = selectors.session_get_live(session_id=session_id, principal=principal)
        if services.pool_maintain_if_due(pool=session.pool):  # stale sessions reaped, free workers handed out
            session = selectors.session_get_live(session_id=session_id, principal=principal)
        services.session_touch(session=session)
        session.estimated_wait_seconds = selectors.session_estimated_wait(session)
        return Response(SessionStatusResponseSerializer(session).data)

    @extend_schema(
        summary="End a session",
        description="Drops its lab claim and promotes the next session. During server shutdown an unknown id "
                    "answers 204 too.",
        parameters=[SESSION_ID_PATH],
        responses={204: None, **ACCESS_ERRORS, **UNKNOWN},
    )
    def delete(self, request, session_id):
        try:
            services.session_end(session_id=session_id, principal=principal_for(request))
        except NotFound:
            if not shutdown.is_shutting_down():
                raise
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionHeartbeatView(RemoteLabView):
    @extend_schema(
        summary="Keep a waiting or active session alive",
        parameters=[SESSION_ID_HEADER],
        request=None,
        responses={204: None, **ACCESS_ERRORS, **UNKNOWN, **problem_responses(s422="X-Session-ID missing.")},
    )
    def post(self, request):
        services.session_heartbeat(session_id=_session_header(request), principal=principal_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _acquired(lab: services.AcquiredLab) -> dict:
    return AcquireResponseSerializer({"reused": lab.reused, "devices": lab.devices}).data


class LabView(RemoteLabView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        summary="Upload a topology and acquire the lab (start it, or attach to the same running one)",
        parameters=[SESSION_ID_HEADER],
        request={"multipart/form-data": AcquireRequestSerializer},
        responses={200: AcquireResponseSerializer, **LAB_GATE, **problem_responses(
            s400="The topology file has no name, or it does not end in .yml/.yaml.",
            s404="Session not found.",
            s409="`insufficient_capacity`: the worker has no room for the lab beside the lablet instances and warm "
                 "labs it holds (`dimension`, `needs`, `free`, `capacity`).",
            s413="The files are larger than SESSION_UPLOAD_MAX_BYTES.",
            s422="Missing topology, too many files, unsafe or duplicate file names, a topology the topology policy "
                 "refuses (`violations`: node, rule, detail; nothing is sent to CML), or CML refused the topology.",
            s423="Session is not active, or another topology is in use (or starting) on the worker.",
            s502="CML failed to start the lab.")},
    )
    def post(self, request):
        principal = principal_for(request)
        session_id = _session_header(request)
        selectors.session_get_active(session_id=session_id, principal=principal)  # 404/423 before the body is read
        storage.upload_check_length(request.META.get("CONTENT_LENGTH"))
        if "topology" not in request.FILES and "topology" in request.data:
            storage.topology_name_check(None)  # a part without a filename is a plain field: the seed's 400
        data = AcquireRequestSerializer(data={
            "topology": request.FILES.get("topology"),
            "reuse": request.data.get("reuse", True),
            "extra_files": request.FILES.getlist("extra_files"),
        })
        data.is_valid(raise_exception=True)
        lab = services.session_lab_acquire_begin(
            session_id=session_id, principal=principal, topology=data.validated_data["topology"],
            extra_files=data.validated_data["extra_files"], reuse=data.validated_data["reuse"])
        if isinstance(lab, services.PendingAcquire):  # a start or a wait: awaited by `lab_view`
            return pending_response(finish=partial(services.session_lab_acquire_finish, pending=lab), data=_acquired,
                                    give_up=partial(services.session_lab_acquire_give_up, pending=lab))
        return Response(_acquired(lab))

    @extend_schema(
        summary="Lab status with its devices (introspection, not part of the seed's stable contract)",
        parameters=[SESSION_ID_HEADER],
        responses={200: LabStatusSerializer, **LAB_GATE},
    )
    def get(self, request):
        session = selectors.session_get_active(session_id=_session_header(request), principal=principal_for(request))
        services.session_touch(session=session)
        lab = selectors.session_lab_of(session=session)
        if lab is None:
            return Response({"status": LabStatus.EMPTY, "worker": session.worker.public_id, "topology_sha256": "",
                             "topology_name": "", "cml_lab_id": "", "ref_count": 0, "devices": [], "started_at": None})
        return Response(LabStatusSerializer(lab).data)

    @extend_schema(
        summary="Destroy the lab",
        parameters=[SESSION_ID_HEADER, OpenApiParameter("force", OpenApiTypes.BOOL, default=True, description=(
            "false: refuse (409) while sessions hold the lab."))],
        responses={
            202: OpenApiResponse(description="Teardown dispatched (a background job deletes it on CML)."),
            204: OpenApiResponse(description="No lab was running."),
            **LAB_GATE,
            **problem_responses(s409="force=false and the lab is in use (ref_count > 0)."),
        },
    )
    def delete(self, request):
        query = DestroyLabQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        dispatched = services.session_lab_destroy(session_id=_session_header(request), principal=principal_for(request),
                                                  force=query.validated_data["force"])
        return Response(status=status.HTTP_202_ACCEPTED if dispatched else status.HTTP_204_NO_CONTENT)


# POST /lab may wait minutes for CML: served on the event loop (daphne), the wait holding no thread.
lab_view = awaiting(LabView.as_view())


class LabReleaseView(RemoteLabView):
    @extend_schema(
        summary="Release this session's claim on the lab",
        parameters=[SESSION_ID_HEADER],
        request=None,
        responses={204: None, **LAB_GATE},
    )
    def post(self, request):
        services.session_lab_release(session_id=_session_header(request), principal=principal_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class LabDevicesView(RemoteLabView):
    @extend_schema(
        summary="Devices of the running lab",
        parameters=[SESSION_ID_HEADER],
        responses={200: DeviceInfoSerializer(many=True), **LAB_GATE},
    )
    def get(self, request):
        session = selectors.session_get_active(session_id=_session_header(request), principal=principal_for(request))
        services.session_touch(session=session)
        lab = selectors.session_lab_running(session=session)
        return Response(DeviceInfoSerializer(lab.devices, many=True).data)


class HealthzView(APIView):
    authentication_classes = []
    permission_classes = [Public]
    throttle_classes = []
    schema = RemoteLabSchema()

    @extend_schema(summary="Liveness probe", responses={204: None}, auth=[])
    def get(self, request):
        return Response(status=status.HTTP_204_NO_CONTENT)


class _Hidden(Exception):
    """The caller is not an admin or operator: the view answers as if it were not there."""


class DebugHealthView(RemoteLabView):
    """To anyone but an admin or operator, whatever the method and whatever their credentials (none, bad,
    expired), exactly the answer of a path with no view: Django's 404, made problem+json by
    ApiProblemMiddleware like any unknown path's, without the headers a view adds (Allow, Vary: Cookie,
    X-RateLimit-*: the caller's request is not counted, as an unknown path's is not)."""

    def initial(self, request, *args, **kwargs):
        try:
            self.perform_authentication(request)  # request.user: a failed authentication leaves it anonymous
        except exceptions.APIException:
            pass
        if not privileged(request.user):
            raise _Hidden()
        super().initial(request, *args, **kwargs)  # the admin's or operator's request: permission, throttle

    def handle_exception(self, exc):
        if isinstance(exc, _Hidden):
            # Reading the credentials touched the session: an unknown path's answer does not vary by cookie.
            session = getattr(self.request._request, "session", None)
            if session is not None and not session.modified:
                session.accessed = False
            return HttpResponseNotFound()
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, HttpResponseNotFound):
            return response  # no Allow or Vary of the view's: as a path with no view
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(summary="Queue diagnostics (unstable; admins and operators)", responses={
        200: DebugHealthSerializer, **problem_responses(
            s404="Not an admin or operator (also without or with bad credentials): the answer of a path with no view.",
            s429="Rate limit exceeded (SESSION_API_RATE_LIMIT).")})
    def get(self, request):
        pools = selectors.pool_counts()
        now = time.time()
        return Response(DebugHealthSerializer({
            "status": "ok",
            "timestamp": now,
            "uptime": now - STARTED,
            "sessions": sum(p["waiting"] + p["active"] for p in pools),
            "queue_length": sum(p["waiting"] for p in pools),
            "shutting_down": shutdown.is_shutting_down(),
            "pools": pools,
        }).data)


class ActiveSessionView(RemoteLabView):
    @extend_schema(
        summary="The longest-active session of a pool (debugging; admins and operators)",
        parameters=[POOL_QUERY],
        responses={200: ActiveSessionResponseSerializer, **ACCESS_ERRORS,
                   **problem_responses(s404="No active session (also the answer to anyone but an admin or "
                                            "operator).")},
    )
    def get(self, request):
        query = CreateSessionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        session = selectors.session_active_first(principal=principal_for(request),
                                                 pool=query.validated_data.get("pool") or settings.SESSION_DEFAULT_POOL)
        if session is None:
            raise NotFound("No active session")
        return Response(ActiveSessionResponseSerializer(session).data)
