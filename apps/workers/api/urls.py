from rest_framework.routers import SimpleRouter

from apps.workers.api.views import WorkerViewSet

app_name = "workers-api"
router = SimpleRouter(trailing_slash=False)
router.register("workers", WorkerViewSet, basename="worker")
urlpatterns = router.urls
