"""The fleet page's start/stop/drain actions (operators, admins; the page is apps.dashboard's: docs/dashboard.md)."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from apps.workers import services
from apps.workers.models import Worker
from apps.api.pages import FLEET_PAGE, page
from apps.core.errors import DomainError

VERBS = {  # form value → (service, message)
    "start": (services.worker_start, "Start requested"),
    "stop": (services.worker_stop, "Stop requested"),
    "drain": (services.worker_drain, "Draining: no new placements"),
    "undrain": (services.worker_undrain, "Taking placements again"),
}


@require_POST
@page(FLEET_PAGE)
def worker_action(request, public_id, verb):
    worker = get_object_or_404(Worker, public_id=public_id)
    if verb not in VERBS:
        messages.error(request, f"Unknown action {verb!r}.")
        return redirect("dashboard:fleet")
    service, done = VERBS[verb]
    try:
        service(worker=worker, actor=request.user.get_username())
    except DomainError as exc:
        messages.error(request, f"{worker.name}: {exc.detail}")
    else:
        messages.success(request, f"{worker.name}: {done}.")
    return redirect("dashboard:fleet")
