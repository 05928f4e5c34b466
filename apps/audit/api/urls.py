from django.urls import path

from apps.audit.api.views import AuditChainRootView, AuditEventViewSet, AuditVerifyView

app_name = "audit-api"
urlpatterns = [
    path("audit/events", AuditEventViewSet.as_view({"get": "list"}), name="event-list"),
    path("audit/verify", AuditVerifyView.as_view(), name="verify"),
    path("audit/chain-root", AuditChainRootView.as_view(), name="chain-root"),
]
