from rest_framework.routers import SimpleRouter

from apps.workers.api.views import WorkerTemplateViewSet, WorkerViewSet
from apps.api.pending import awaiting_routes

app_name = "workers-api"
router = SimpleRouter(trailing_slash=False)
router.register("workers", WorkerViewSet, basename="worker")
router.register("worker-templates", WorkerTemplateViewSet, basename="worker-template")

# Verbs whose answer awaits a q task (CML): the router's own route, served by an async view (daphne; the nginx
# template routes these paths there).
AWAITED = {"worker-sync-now"}
urlpatterns = awaiting_routes(router.urls, AWAITED)
