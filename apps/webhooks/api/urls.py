from rest_framework.routers import SimpleRouter

from apps.webhooks.api.views import WebhookViewSet

app_name = "webhooks-api"
router = SimpleRouter(trailing_slash=False)
router.register("webhooks", WebhookViewSet, basename="webhook")
urlpatterns = router.urls
