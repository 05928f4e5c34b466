from rest_framework.routers import SimpleRouter

from apps.lablets.api.views import LabletDefinitionViewSet, LabletInstanceViewSet

app_name = "lablets-api"
router = SimpleRouter(trailing_slash=False)
router.register("lablet-definitions", LabletDefinitionViewSet, basename="definition")
router.register("lablet-instances", LabletInstanceViewSet, basename="instance")
urlpatterns = router.urls
