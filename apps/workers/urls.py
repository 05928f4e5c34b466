from django.urls import path

from apps.workers import report_views, views

app_name = "workers"
urlpatterns = [
    path("fleet/<str:public_id>/<str:verb>", views.worker_action, name="worker_action"),
    path("reports/", report_views.reports, name="reports"),
    path("reports/export.csv", report_views.reports_csv, name="reports_csv"),
]
