"""/api/auth/api-keys: a user's own API keys (the rerobots seed's token routes, under /api/auth/api-keys).

POST creates a key and answers it once (201); GET lists the caller's keys (never a key, only its
SHA-256, which names it); POST revoke/{sha256} revokes one of the caller's keys (a key may revoke
itself; anyone else's is 404); POST purge revokes them all. Not idempotent-replayed: a replay would
have to store the key.
"""

from datetime import timedelta

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.identity import services
from apps.api.actors import actor_for
from apps.api.permissions import API_KEYS, RolePermission
from apps.api.roles import ROLES
from apps.api.schema import COMMON_ERRORS, problem_responses
from apps.api.models import ApiKey

MAX_DAYS = 3650


class ApiKeySerializer(serializers.ModelSerializer):
    sha256 = serializers.CharField(source="key_hash", help_text="SHA-256 of the key: its name in revoke/{sha256}.")
    role = serializers.CharField(help_text="The one role of requests made with the key (blank: all of yours).")
    status = serializers.SerializerMethodField(help_text="active, expired or revoked.")

    class Meta:
        model = ApiKey
        fields = ["sha256", "prefix", "name", "role", "status", "created_at", "last_used_at", "expires_at", "revoked_at"]

    def get_status(self, obj) -> str:
        return obj.state(timezone.now())


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself: shown in this answer only, never again.")

    class Meta(ApiKeySerializer.Meta):
        fields = ["key", *ApiKeySerializer.Meta.fields]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=ROLES, required=False,
                                   help_text="At most one of your roles (an admin may also make operator and "
                                             "instructor keys). Default: your highest role.")
    expires_at = serializers.DateTimeField(required=False, help_text="When the key stops working (future).")
    expires_in_days = serializers.IntegerField(required=False, min_value=1, max_value=MAX_DAYS,
                                               help_text="Or: this many days from now.")

    def validate(self, data):
        if "expires_at" in data and "expires_in_days" in data:
            raise serializers.ValidationError({"expires_in_days": ["Give expires_at or expires_in_days, not both."]})
        days = data.pop("expires_in_days", None)
        if days is not None:
            data["expires_at"] = timezone.now() + timedelta(days=days)
        return data


ApiKeyList = inline_serializer("ApiKeyList", {"api_keys": ApiKeySerializer(many=True), "total": serializers.IntegerField()})
Purged = inline_serializer("ApiKeysPurged", {"revoked": serializers.IntegerField()})
SHA256 = OpenApiParameter("sha256", str, OpenApiParameter.PATH, description="SHA-256 (hex) of the key.")


class ApiKeyView(APIView):
    permission_classes = [RolePermission]
    policy = API_KEYS


class ApiKeyListCreateView(ApiKeyView):
    @extend_schema(tags=["auth"], summary="List your API keys", responses={200: ApiKeyList, **COMMON_ERRORS})
    def get(self, request):
        keys = ApiKey.objects.filter(user=request.user).order_by("-created_at", "-pk")
        return Response({"api_keys": ApiKeySerializer(keys, many=True).data, "total": len(keys)})

    @extend_schema(
        tags=["auth"], summary="Create an API key (the key is in this answer only)",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer, **COMMON_ERRORS,
                   **problem_responses(s403="The role asked for is above yours.", s422="Validation failed.")},
    )
    def post(self, request):
        data = ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, raw = services.api_key_create(user=request.user, actor=actor_for(request), **data.validated_data)
        api_key.key = raw
        response = Response(ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ApiKeyRevokeView(ApiKeyView):
    @extend_schema(tags=["auth"], summary="Revoke one of your API keys (a key may revoke itself)", request=None,
                   parameters=[SHA256],
                   responses={200: ApiKeySerializer, **COMMON_ERRORS, **problem_responses(s404="No key of yours has it.")})
    def post(self, request, sha256: str):
        api_key = services.api_key_revoke_by_sha256(user=request.user, sha256=sha256, actor=actor_for(request))
        return Response(ApiKeySerializer(api_key).data)


class ApiKeyPurgeView(ApiKeyView):
    @extend_schema(tags=["auth"], summary="Revoke all your API keys", request=None, responses={200: Purged, **COMMON_ERRORS})
    def post(self, request):
        return Response({"revoked": services.api_key_purge(user=request.user, actor=actor_for(request))})


app_name = "api-keys"
urlpatterns = [
    path("api-keys", ApiKeyListCreateView.as_view(), name="list"),
    path("api-keys/purge", ApiKeyPurgeView.as_view(), name="purge"),
    path("api-keys/revoke/<str:sha256>", ApiKeyRevokeView.as_view(), name="revoke"),
]
