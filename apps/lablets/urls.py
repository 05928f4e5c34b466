from django.urls import path

from apps.lablets import definition_views, timeline_views, views

app_name = "lablets"
urlpatterns = [
    path("instances/", views.instance_list, name="instance_list"),
    path("instances/schedule/", views.instance_schedule, name="instance_schedule"),
    path("instances/timeline/", timeline_views.instance_timeline, name="instance_timeline"),
    path("instances/<str:public_id>/", views.instance_detail, name="instance_detail"),
    path("instances/<str:public_id>/<str:verb>", views.instance_action, name="instance_action"),
    path("definitions/", definition_views.definition_list, name="definition_list"),
    path("definitions/new/", definition_views.definition_create, name="definition_create"),
    path("definitions/<str:public_id>/", definition_views.definition_detail, name="definition_detail"),
    path("definitions/<str:public_id>/edit/", definition_views.definition_edit, name="definition_edit"),
    path("definitions/<str:public_id>/new-version/", definition_views.definition_new_version,
         name="definition_new_version"),
    path("definitions/<str:public_id>/deprecate", definition_views.definition_set_active, {"active": False},
         name="definition_deprecate"),
    path("definitions/<str:public_id>/reactivate", definition_views.definition_set_active, {"active": True},
         name="definition_reactivate"),
    path("definitions/<str:public_id>/sync", definition_views.definition_sync, name="definition_sync"),
]
