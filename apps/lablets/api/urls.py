from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.lablets.api import scheduler_views
from apps.lablets.api.views import LabletDefinitionViewSet, LabletInstanceViewSet
from apps.api.pending import awaiting_routes

app_name = "lablets-api"
router = SimpleRouter(trailing_slash=False)
router.register("lablet-definitions", LabletDefinitionViewSet, basename="definition")
router.register("lablet-instances", LabletInstanceViewSet, basename="instance")

# Verbs whose answer awaits a q task (CML, S3): the router's own route, served by an async view (daphne; the
# nginx template routes these paths there).
AWAITED = {"instance-terminate", "instance-start-collection", "definition-sync"}


# Explicit paths first: `lablet-instances/bulk` would otherwise be taken for an instance id.
urlpatterns = [
    path("lablet-instances/bulk", scheduler_views.LabletInstanceBulkView.as_view(), name="instance_bulk"),
    path("lablet-instances/<str:id>/priority", scheduler_views.LabletInstancePriorityView.as_view(),
         name="instance_priority"),
    path("scheduler/preview", scheduler_views.SchedulerPreviewView.as_view(), name="scheduler_preview"),
    path("scheduler/status", scheduler_views.SchedulerStatusView.as_view(), name="scheduler_status"),
    *awaiting_routes(router.urls, AWAITED),
]
