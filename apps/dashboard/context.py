"""The navigation by role, for every template (settings.TEMPLATES context_processors)."""

from django.urls import reverse

from apps.api.permissions import AUDIT, LABLET_DEFINITIONS, LABLET_INSTANCES, WEBHOOKS, allows
from apps.api.pages import FLEET_PAGE, SESSIONS_PAGE


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_links": []}
    links = []
    if allows(LABLET_INSTANCES, user=user):
        links += [("Overview", reverse("dashboard:overview")), ("Instances", reverse("lablets:instance_list"))]
    if allows(LABLET_DEFINITIONS, user=user):  # every role reads; admins and instructors write
        links.append(("Definitions", reverse("lablets:definition_list")))
    if allows(FLEET_PAGE, user=user):  # operators and admins
        links.append(("Fleet", reverse("dashboard:fleet")))
        links.append(("Reports", reverse("dashboard:reports")))
        links.append(("Fleet plan", reverse("dashboard:fleet_plan")))
    if allows(SESSIONS_PAGE, user=user):  # instructors: their own sessions
        links.append(("Sessions", reverse("dashboard:sessions")))
    if allows(AUDIT, user=user):
        links.append(("Audit", reverse("dashboard:audit")))
    if allows(WEBHOOKS, user=user):  # admins only
        links.append(("Webhooks", reverse("dashboard:webhooks")))
    if user.is_staff:  # the Django admin lets in staff only (admins and operators)
        links.append(("Django admin", "/admin/"))
    return {"nav_links": links}
