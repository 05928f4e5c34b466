"""/api/remote-lab: the seed's paths, unchanged (no trailing slashes)."""

from django.urls import path

from apps.sessions.api import views

app_name = "remote-lab-api"
urlpatterns = [
    path("session", views.SessionCreateView.as_view(), name="session_create"),
    path("session/heartbeat", views.SessionHeartbeatView.as_view(), name="session_heartbeat"),  # before {id}
    path("session/<str:session_id>", views.SessionDetailView.as_view(), name="session_detail"),
    path("lab", views.lab_view, name="lab"),  # async: nginx sends it to daphne
    path("lab/release", views.LabReleaseView.as_view(), name="lab_release"),
    path("lab/devices", views.LabDevicesView.as_view(), name="lab_devices"),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    path("debug/health", views.DebugHealthView.as_view(), name="debug_health"),
    path("active-session", views.ActiveSessionView.as_view(), name="active_session"),
]
