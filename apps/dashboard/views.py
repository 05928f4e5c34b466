"""The overview page, the fleet page (the workers per status, and a page of cards, one per worker with its live
instances, filtered by status and name; the actions are apps.workers.views'), the audit page (the journal and its verification), and the read-only sessions and
webhooks pages."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.audit.selectors import audit_event_list
from apps.audit.services import audit_verify
from apps.api.permissions import AUDIT, LABLET_INSTANCES, WEBHOOKS
from apps.dashboard import ops_selectors, selectors
from apps.api.pages import FLEET_PAGE, SESSIONS_PAGE, page

AUDIT_PAGE_SIZE = 50


@page(LABLET_INSTANCES)
def overview(request):
    return render(request, "dashboard/overview.html", selectors.overview(user=request.user))


@page(FLEET_PAGE)
def fleet(request):
    context = selectors.fleet_page(status=request.GET.get("status", ""), name=request.GET.get("q", "").strip(),
                                   page=request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "workers/fleet.html", {**context, "query": query.urlencode()})


@page(AUDIT)
def audit(request):
    filters = {"event_type": [t for t in request.GET.get("event_type", "").split(",") if t],
               "resource": request.GET.get("resource", "")}
    events = audit_event_list(filters=filters).order_by("-sequence_num")
    page_obj = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "dashboard/audit.html", {
        "page_obj": page_obj, "filters": request.GET, "verification": request.session.pop("audit_verification", None),
    })


@require_POST
@page(AUDIT)
def audit_verify_chain(request):
    result = audit_verify(actor=request.user.get_username())
    request.session["audit_verification"] = {
        "valid": result.valid, "total_events": result.total_events, "first_tampered": result.first_tampered,
        "chain_root_hash": result.chain_root_hash or "", "reason": result.reason,
    }
    (messages.success if result.valid else messages.error)(
        request, "The chain is intact." if result.valid else f"The chain is broken: {result.reason}")
    return redirect("dashboard:audit")


@require_GET
@page(SESSIONS_PAGE)
def sessions(request):
    return render(request, "dashboard/sessions.html", ops_selectors.sessions_page(user=request.user))


@require_GET
@page(WEBHOOKS)
def webhooks(request):
    return render(request, "dashboard/webhooks.html", ops_selectors.webhooks_page())
