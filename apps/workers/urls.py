from django.urls import path

from apps.workers import views

app_name = "workers"
urlpatterns = [
    path("fleet/<str:public_id>/<str:verb>", views.worker_action, name="worker_action"),
]
