from rest_framework.routers import SimpleRouter

from apps.workers.api.views import WorkerTemplateViewSet, WorkerViewSet

app_name = "workers-api"
router = SimpleRouter(trailing_slash=False)
router.register("workers", WorkerViewSet, basename="worker")
router.register("worker-templates", WorkerTemplateViewSet, basename="worker-template")
urlpatterns = router.urls
