from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.webhooks import services
from apps.webhooks.api.serializers import (
    WebhookCreatedSerializer,
    WebhookCreateSerializer,
    WebhookDeliverySerializer,
    WebhookSerializer,
    WebhookUpdateSerializer,
)
from apps.webhooks.models import WebhookDeliveryAttempt, WebhookSubscription
from apps.api.actors import actor_for
from apps.api.lists import envelope_response, envelope_serializer, list_parameters, parse_list_params
from apps.api.permissions import WEBHOOKS
from apps.api.schema import READ_ERRORS, WRITE_ERRORS
from apps.api.views import ResourceViewSet

SORT_FIELDS = {"created_at": "created_at", "updated_at": "updated_at", "url": "url"}
DELIVERY_SORT_FIELDS = {"created_at": "delivered_at", "delivered_at": "delivered_at", "attempt": "attempt"}
WebhookList = envelope_serializer("WebhookList", "webhooks", WebhookSerializer)
WebhookDeliveryList = envelope_serializer("WebhookDeliveryList", "deliveries", WebhookDeliverySerializer)


@extend_schema_view(
    list=extend_schema(parameters=list_parameters(SORT_FIELDS), responses={200: WebhookList, **READ_ERRORS}),
    retrieve=extend_schema(responses={200: WebhookSerializer, **READ_ERRORS}),
    create=extend_schema(request=WebhookCreateSerializer, responses={201: WebhookCreatedSerializer, **WRITE_ERRORS}),
    partial_update=extend_schema(request=WebhookUpdateSerializer, responses={200: WebhookSerializer, **WRITE_ERRORS}),
    destroy=extend_schema(responses={204: None, **WRITE_ERRORS}),
)
class WebhookViewSet(ResourceViewSet):
    """CloudEvents webhook subscriptions (docs/webhooks.md). Admins only."""

    serializer_class = WebhookSerializer
    list_key = "webhooks"
    sort_fields = SORT_FIELDS
    policy = WEBHOOKS
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return WebhookSubscription.objects.select_related("created_by")

    def list(self, request):
        return self.list_response(self.get_queryset())

    def retrieve(self, request, id=None):
        return Response(WebhookSerializer(self.get_object()).data)

    def create(self, request):
        data = WebhookCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub = services.webhook_subscription_create(actor=actor_for(request), created_by=request.user, **data.validated_data)
        return Response(WebhookCreatedSerializer(sub).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, id=None):
        sub = self.get_object()
        data = WebhookUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        sub = services.webhook_subscription_update(subscription=sub, actor=actor_for(request), **data.validated_data)
        return Response(WebhookSerializer(sub).data)

    def destroy(self, request, id=None):
        services.webhook_subscription_delete(subscription=self.get_object(), actor=actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=list_parameters(DELIVERY_SORT_FIELDS), responses={200: WebhookDeliveryList, **READ_ERRORS})
    @action(detail=True, methods=["get"])
    def deliveries(self, request, id=None):
        """The delivery log: one row per attempt, newest first by default."""
        sub = self.get_object()
        return envelope_response(
            request, key="deliveries", queryset=WebhookDeliveryAttempt.objects.filter(subscription=sub),
            serializer_class=WebhookDeliverySerializer, params=parse_list_params(request, DELIVERY_SORT_FIELDS),
            sort_fields=DELIVERY_SORT_FIELDS,
        )
