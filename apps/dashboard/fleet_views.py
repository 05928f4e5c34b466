"""The fleet plan page (operators, admins): demand against capacity over the next 24 hours, the planner's
planned actions and its recent decisions (docs/dashboard.md#fleet-plan)."""

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.api.pages import FLEET_PAGE, page
from apps.fleet.selectors import fleet_plan

HOURS = 24


@require_GET
@page(FLEET_PAGE)
def fleet_plan_page(request):
    plan = fleet_plan(hours=HOURS)
    return render(request, "dashboard/fleet_plan.html", {
        "plan": plan, "time_zone": timezone.get_current_timezone_name(),
    })
