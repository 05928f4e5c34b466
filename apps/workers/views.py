"""The fleet page (operators, admins): a card per worker and its start/stop/drain actions (docs/dashboard.md)."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.workers import services
from apps.workers.models import Worker
from apps.api.pages import FLEET_PAGE, page
from apps.dashboard.selectors import worker_cards
from apps.core.errors import DomainError

VERBS = {  # form value → (service, message)
    "start": (services.worker_start, "Start requested"),
    "stop": (services.worker_stop, "Stop requested"),
    "drain": (services.worker_drain, "Draining: no new placements"),
    "undrain": (services.worker_undrain, "Taking placements again"),
}


@page(FLEET_PAGE)
def fleet(request):
    return render(request, "workers/fleet.html", {"workers": worker_cards(with_instances=True)})


@require_POST
@page(FLEET_PAGE)
def worker_action(request, public_id, verb):
    worker = get_object_or_404(Worker, public_id=public_id)
    if verb not in VERBS:
        messages.error(request, f"Unknown action {verb!r}.")
        return redirect("workers:fleet")
    service, done = VERBS[verb]
    try:
        service(worker=worker, actor=request.user.get_username())
    except DomainError as exc:
        messages.error(request, f"{worker.name}: {exc.detail}")
    else:
        messages.success(request, f"{worker.name}: {done}.")
    return redirect("workers:fleet")
