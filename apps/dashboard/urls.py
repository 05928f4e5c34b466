from django.urls import path

from apps.dashboard import fleet_views, report_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/plan/", fleet_views.fleet_plan_page, name="fleet_plan"),
    path("reports/", report_views.reports, name="reports"),
    path("reports/export.csv", report_views.reports_csv, name="reports_csv"),
    path("audit/", views.audit, name="audit"),
    path("audit/verify", views.audit_verify_chain, name="audit_verify"),
    path("sessions/", views.sessions, name="sessions"),
    path("webhooks/", views.webhooks, name="webhooks"),
]
