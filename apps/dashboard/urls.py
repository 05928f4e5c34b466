from django.urls import path

from apps.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("fleet/", views.fleet, name="fleet"),
    path("audit/", views.audit, name="audit"),
    path("audit/verify", views.audit_verify_chain, name="audit_verify"),
    path("sessions/", views.sessions, name="sessions"),
    path("webhooks/", views.webhooks, name="webhooks"),
]
