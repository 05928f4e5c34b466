"""Dashboard pages of lablet instances: the list, scheduling one or a roster, one instance with its actions
(docs/dashboard.md)."""

import csv
from datetime import timedelta
from datetime import timezone as dt_timezone

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseBadRequest
from django.utils.dateparse import parse_datetime
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from apps.audit.models import AuditEvent
from apps.lablets import selectors, services
from apps.lablets.lifecycle import TERMINAL
from apps.lablets.forms.instances import ExtendForm, InstanceFilterForm, ScheduleForm
from apps.lablets.services.awaited import lablet_instance_start_collection_begin, lablet_instance_terminate_begin
from apps.lablets.services.bulk import lablet_instances_create_bulk
from apps.lablets.services.student_links import (
    student_link_expires_at,
    student_link_path,
    student_links_for_instances,
)
from apps.api.permissions import LABLET_INSTANCE_WRITES, LABLET_INSTANCES, allows
from apps.api.pages import page
from apps.core.errors import DomainError

PAGE_SIZE = 50
# Rows that may yet show nodes booting get a (hidden) progress bar for live.js; the others need none.
BOOTING_STATUSES = ("pending", "scheduled", "instantiating")
# Terminate and collection need CML (and S3): the page enqueues them (a q task) and shows the instance at
# once; its badge follows the task live. No request thread waits for CML (apps/lablets/services/awaited.py).
VERBS = {  # form value → (service, past tense for the message)
    "collect": (lablet_instance_start_collection_begin, "Collection requested"),
    "grade": (services.lablet_instance_start_grading, "Grading started"),
    "terminate": (lablet_instance_terminate_begin, "Terminate requested"),
}


@page(LABLET_INSTANCES)
def instance_list(request):
    form = InstanceFilterForm(request.GET)
    instances = selectors.lablet_instance_list(user=request.user, filters=form.selector_filters())
    page_obj = Paginator(instances.order_by(form.ordering(), "pk"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "lablets/instance_list.html",
                  {"form": form, "page_obj": page_obj, "query": query.urlencode(), "sort": form.ordering(),
                   "booting_statuses": BOOTING_STATUSES,
                   "can_schedule": allows(LABLET_INSTANCE_WRITES, user=request.user)})


def _detail(request, instance, *, extend_form=None, error=None, status=200):
    history = AuditEvent.objects.filter(resource_type="lablet_instance", resource_id=instance.public_id)
    return render(request, "lablets/instance_detail.html", {
        "instance": instance,
        "history": history.order_by("timestamp", "pk"),
        "extend_form": extend_form or ExtendForm(),
        "can_act": allows(LABLET_INSTANCES, user=request.user, method="POST"),
        "browser_consoles": selectors.lablet_instance_browser_consoles(instance=instance),
        "error": error,
    }, status=status)


@page(LABLET_INSTANCES)
def instance_detail(request, public_id):
    instance = get_object_or_404(selectors.lablet_instance_visible_to(user=request.user), public_id=public_id)
    return _detail(request, instance)


@require_POST
@page(LABLET_INSTANCES)
def instance_action(request, public_id, verb):
    """One lifecycle verb from the instance page; a refusal is shown on the page, the input kept."""
    instance = get_object_or_404(selectors.lablet_instance_visible_to(user=request.user), public_id=public_id)
    actor = request.user.get_username()
    extend_form = ExtendForm(request.POST) if verb == "extend" else None
    try:
        if extend_form is not None:
            if not extend_form.is_valid():
                return _detail(request, instance, extend_form=extend_form, status=422)
            services.lablet_instance_extend(instance=instance, actor=actor, minutes=extend_form.cleaned_data["minutes"])
            done = f"Extended by {extend_form.cleaned_data['minutes']} minutes"
        elif verb in VERBS:
            service, done = VERBS[verb]
            service(instance=instance, actor=actor)
        else:
            return _detail(request, instance, error=f"Unknown action {verb!r}.", status=400)
    except DomainError as exc:
        instance.refresh_from_db()
        return _detail(request, instance, extend_form=extend_form, error=exc.detail, status=exc.status_code)
    messages.success(request, f"{done}.")
    return redirect("lablets:instance_detail", public_id=instance.public_id)


@page(LABLET_INSTANCE_WRITES)
def instance_schedule(request):
    """Book one instance or a class (a roster): the per-owner results are shown on the page."""
    definitions = selectors.lablet_definition_list(filters={"is_active": True}).order_by("name", "version")
    form = ScheduleForm(request.POST or None, request.FILES or None, definitions=definitions)
    outcome, error, status = None, None, 200
    if request.method == "POST" and form.is_valid():
        start = form.cleaned_data["timeslot_start"] or timezone.now()
        minutes = form.cleaned_data["duration_minutes"]
        try:
            outcome = lablet_instances_create_bulk(
                actor=request.user.get_username(), user=request.user,
                definition_id=form.cleaned_data["definition"].public_id, owner_ids=form.cleaned_data["owner_ids"],
                timeslot_start=start, timeslot_end=start + timedelta(minutes=minutes) if minutes else None)
        except DomainError as exc:
            error, status = exc.detail, exc.status_code
    elif request.method == "POST":
        status = 422
    return render(request, "lablets/instance_schedule.html",
                  {"form": form, "outcome": outcome, "error": error}, status=status)


@require_POST
@page(LABLET_INSTANCE_WRITES)
def student_links_csv(request):
    """The student links of a class (one definition, one start) as CSV: new links for instances without a
    valid one; `rotate` replaces every link (docs/dashboard.md#student-links-of-a-class)."""
    try:
        start = parse_datetime(request.POST.get("timeslot_start", "").strip().replace(" ", "T"))
    except ValueError:
        start = None
    if start is None:
        return HttpResponseBadRequest("timeslot_start must be an ISO 8601 date and time.\n")
    if timezone.is_naive(start):
        start = timezone.make_aware(start, dt_timezone.utc)
    instances = list(selectors.lablet_instance_visible_to(user=request.user)
                     .filter(definition__public_id=request.POST.get("definition", "").strip(), timeslot_start=start)
                     .exclude(status__in=TERMINAL).select_related("definition", "worker").order_by("owner_id", "pk"))
    rows = student_links_for_instances(instances=instances, actor=request.user.get_username(),
                                       rotate=request.POST.get("rotate") == "1")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="student-links.csv"'
    response["Cache-Control"] = "no-store"
    writer = csv.writer(response)
    writer.writerow(["owner_id", "instance_id", "url", "expires_at", "note"])
    for instance, link, raw in rows:
        url = request.build_absolute_uri(student_link_path(raw)) if raw else ""
        note = "new link" if raw else f"existing link {link.prefix}… kept (rotate to get a new URL)"
        writer.writerow([instance.owner_id, instance.public_id, url, student_link_expires_at(link).isoformat(), note])
    return response
