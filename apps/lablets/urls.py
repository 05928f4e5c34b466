from django.urls import path

from apps.lablets.views import definitions, instances, timeline

app_name = "lablets"
urlpatterns = [
    path("instances/", instances.instance_list, name="instance_list"),
    path("instances/schedule/", instances.instance_schedule, name="instance_schedule"),
    path("instances/timeline/", timeline.instance_timeline, name="instance_timeline"),
    path("instances/student-links.csv", instances.student_links_csv, name="student_links_csv"),
    path("instances/<str:public_id>/", instances.instance_detail, name="instance_detail"),
    path("instances/<str:public_id>/<str:verb>", instances.instance_action, name="instance_action"),
    path("definitions/", definitions.definition_list, name="definition_list"),
    path("definitions/new/", definitions.definition_create, name="definition_create"),
    path("definitions/<str:public_id>/", definitions.definition_detail, name="definition_detail"),
    path("definitions/<str:public_id>/edit/", definitions.definition_edit, name="definition_edit"),
    path("definitions/<str:public_id>/new-version/", definitions.definition_new_version,
         name="definition_new_version"),
    path("definitions/<str:public_id>/deprecate", definitions.definition_set_active, {"active": False},
         name="definition_deprecate"),
    path("definitions/<str:public_id>/reactivate", definitions.definition_set_active, {"active": True},
         name="definition_reactivate"),
    path("definitions/<str:public_id>/sync", definitions.definition_sync, name="definition_sync"),
]
