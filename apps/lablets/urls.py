from django.urls import path

from apps.lablets import views

app_name = "lablets"
urlpatterns = [
    path("instances/", views.instance_list, name="instance_list"),
    path("instances/schedule/", views.instance_schedule, name="instance_schedule"),
    path("instances/<str:public_id>/", views.instance_detail, name="instance_detail"),
    path("instances/<str:public_id>/<str:verb>", views.instance_action, name="instance_action"),
]
