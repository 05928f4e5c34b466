"""Dashboard pages of lablet definitions: the list (the versions of one name together), one definition with
its other versions, instances and history, the YAML editor (create, edit, new version; "Check YAML"
validates without saving), deprecate / reactivate and sync from CML (docs/dashboard.md). The sync is an async
view: it awaits the q task that asks CML, on daphne (deploy/nginx routes its path there).

Who may do what is the API's policy for definitions (LABLET_DEFINITIONS): every role reads, admins and
instructors write — instructors only the definitions they own (`may_change_definition`, enforced by the
services): another's edit page, deprecation and sync answer 403 with the definition's page saying why, and a
refused POST is journalled (`api_call.refused`). "New version" is open to every writer: the copy is theirs. The
editor pages are write-only, GET included (no form for those who cannot save it)."""

import re
from functools import partial

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.audit.api.refusals import journal_page_refusal
from apps.audit.models import AuditEvent
from apps.lablets import selectors, services
from apps.lablets.forms.definitions import DefinitionFilterForm, DefinitionForm, SyncForm, yaml_error_line
from apps.lablets.models import InstanceStatus, LabletDefinition
from apps.lablets.services.awaited import lablet_definition_sync_begin, lablet_definition_sync_finish
from apps.lablets.services.definitions import lablet_definition_check_change, validate_topology
from apps.api.permissions import LABLET_DEFINITIONS, Policy, allows, may_change_definition, privileged
from apps.api.roles import ADMIN, has_role
from apps.api.pages import page
from apps.core.errors import DomainError, Forbidden, ValidationFailed

FORM_METHODS = require_http_methods(["GET", "POST"])
PAGE_SIZE = 50
HISTORY_SIZE = 20
DEFINITION_FORMS = Policy("lablet-definition-forms", read=LABLET_DEFINITIONS.write, write=LABLET_DEFINITIONS.write)
SHOWN_STATUSES = [s for s in InstanceStatus.values if s != InstanceStatus.TERMINATED]  # as the Instances list


def _instances_seen_by(user) -> Q:
    """The instances the Instances list shows this user (instructors: their own; terminated left out)."""
    seen = Q(instances__status__in=SHOWN_STATUSES)
    return seen if privileged(user) else seen & Q(instances__created_by=user)


def _definition(public_id) -> LabletDefinition:
    return get_object_or_404(selectors.lablet_definition_list(), public_id=public_id)


@require_GET
@page(LABLET_DEFINITIONS)
def definition_list(request):
    form = DefinitionFilterForm(request.GET)
    definitions = form.apply(selectors.lablet_definition_list()).annotate(
        instance_count=Count("instances", filter=_instances_seen_by(request.user)))
    page_obj = Paginator(definitions.order_by("name", "-created_at", "pk"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "lablets/definition_list.html", {
        "form": form, "page_obj": page_obj, "query": query.urlencode(),
        "can_write": allows(LABLET_DEFINITIONS, user=request.user, method="POST"),
        "own_only": not privileged(request.user),
    })


def _detail(request, definition, *, sync_form=None, error=None, status=200):
    user = request.user
    history = AuditEvent.objects.filter(resource_type="lablet_definition", resource_id=definition.public_id)
    versions = selectors.lablet_definition_list(filters={"name": definition.name}).exclude(pk=definition.pk)
    instances = selectors.lablet_instance_list(user=user, filters={"definition_id": definition.public_id})
    return render(request, "lablets/definition_detail.html", {
        "definition": definition,
        "versions": versions.order_by("-created_at"),
        "instance_count": instances.count(),
        "history": history.order_by("-timestamp", "-pk")[:HISTORY_SIZE],
        "can_write": allows(LABLET_DEFINITIONS, user=user, method="POST"),
        "can_change": may_change_definition(user, definition),
        "sync_form": sync_form or SyncForm(),
        "error": error,
    }, status=status)


def _refused(request, definition, exc: Forbidden):
    """Someone else's definition (403): its page, saying why; a refused POST is journalled as the API's is."""
    if request.method == "POST":
        journal_page_refusal(request, exc)
    return _detail(request, definition, error=exc.detail, status=exc.status_code)


@require_GET
@page(LABLET_DEFINITIONS)
def definition_detail(request, public_id):
    return _detail(request, _definition(public_id))


def _editor(request, form, save, *, done: str, extra_data: dict | None = None, trusted: bool = False, **context):
    """GET: the form. POST "check": the topology validated (the topology policy too, `trusted` as a save would
    judge it), nothing saved. POST: saved through `save` (a service taking `data=`); a refusal goes next to its
    field, everything typed kept."""
    status, yaml_ok = 200, False
    if request.method == "POST" and "check" in request.POST:
        form = DefinitionForm(initial=request.POST.dict())  # unbound: only the topology is judged
        try:
            validate_topology(request.POST.get("cml_lab_yaml", "").replace("\r\n", "\n"), trusted=trusted)
            yaml_ok = True
        except ValidationFailed as exc:
            context["yaml_errors"], status = exc.errors["cml_lab_yaml"], exc.status_code
    elif request.method == "POST":
        if form.is_valid():
            try:
                definition = save(data={**form.service_data(), **(extra_data or {})})
            except DomainError as exc:
                form.add_domain_error(exc)
                status = exc.status_code
            else:
                messages.success(request, f"{done} {definition.name} {definition.version}.")
                return redirect("lablets:definition_detail", public_id=definition.public_id)
        else:
            status = 422
    yaml_errors = context.pop("yaml_errors", None) or form.errors.get("cml_lab_yaml", [])
    return render(request, "lablets/definition_form.html", {
        "form": form, "yaml_errors": yaml_errors, "error_line": yaml_error_line(yaml_errors), "yaml_ok": yaml_ok,
        **context,
    }, status=status)


def _bound(request, initial=None) -> DefinitionForm:
    return DefinitionForm(request.POST if request.method == "POST" else None, initial=initial)


@FORM_METHODS
@page(DEFINITION_FORMS)
def definition_create(request):
    save = partial(services.lablet_definition_create, actor=request.user.get_username(), user=request.user,
                   may_trust=has_role(request.user, ADMIN))
    return _editor(request, _bound(request), save, done="Created", heading="New definition")


@FORM_METHODS
@page(DEFINITION_FORMS)
def definition_edit(request, public_id):
    definition = _definition(public_id)
    try:
        lablet_definition_check_change(definition=definition, user=request.user)
    except Forbidden as exc:
        return _refused(request, definition, exc)
    may_trust = has_role(request.user, ADMIN)
    save = partial(services.lablet_definition_update, definition=definition, user=request.user,
                   actor=request.user.get_username(), may_trust=may_trust)
    return _editor(request, _bound(request, DefinitionForm.initial_from(definition)), save, done="Saved",
                   heading=f"Edit {definition.name} {definition.version}", definition=definition,
                   trusted=definition.trusted and may_trust)


def next_version(definition: LabletDefinition) -> str:
    """The definition's version with its last number raised, skipping the versions its name already has
    ("1.0.9" → "1.0.10"); blank when the version has no number."""
    taken = set(selectors.lablet_definition_list(filters={"name": definition.name}).values_list("version", flat=True))
    version = definition.version
    for _ in range(100):
        match = re.search(r"(\d+)(?!.*\d)", version)
        if match is None:
            return ""
        version = f"{version[:match.start()]}{int(match.group()) + 1}{version[match.end():]}"
        if version not in taken:
            return version
    return ""


@FORM_METHODS
@page(DEFINITION_FORMS)
def definition_new_version(request, public_id):
    """A new definition prefilled from this one (its port definitions and direct console access copied); this one
    stays as it is."""
    source = _definition(public_id)
    may_trust = has_role(request.user, ADMIN)
    save = partial(services.lablet_definition_create, actor=request.user.get_username(), user=request.user,
                   may_trust=may_trust)
    form = _bound(request, DefinitionForm.initial_from(source, version=next_version(source)))
    trusted = source.trusted and may_trust  # an admin's new version of a trusted definition stays trusted
    extra = {"port_definitions": source.port_definitions, "trusted": trusted,
             "direct_console_access": source.direct_console_access}  # the owner's choice, like the ports
    return _editor(request, form, save, extra_data=extra,
                   done="Created", heading=f"New version of {source.name}", source=source, trusted=trusted)


@require_POST
@page(LABLET_DEFINITIONS)
def definition_set_active(request, public_id, active: bool):
    """Deprecate (no new instances; the booked ones stay) or reactivate."""
    definition = _definition(public_id)
    try:
        definition = services.lablet_definition_update(definition=definition, user=request.user,
                                                       actor=request.user.get_username(), data={"is_active": active})
    except Forbidden as exc:
        return _refused(request, definition, exc)
    except DomainError as exc:
        return _detail(request, definition, error=exc.detail, status=exc.status_code)
    done = "reactivated." if active else "deprecated: it takes no new instances."
    messages.success(request, f"{definition} {done}")
    return redirect("lablets:definition_detail", public_id=definition.public_id)


def _sync_begin(request, public_id):
    """The sync's first step, in a thread: the definition (404), the form, then the task enqueued (none when
    the form is invalid, or the refusal when the caller may not sync that lab into this definition)."""
    definition = _definition(public_id)
    form = SyncForm(request.POST)
    if not form.is_valid():
        return definition, form, None, None
    try:
        pending = lablet_definition_sync_begin(definition=definition, user=request.user,
                                               actor=request.user.get_username(), may_trust=has_role(request.user, ADMIN),
                                               **form.service_kwargs())
    except DomainError as exc:
        return definition, form, None, exc
    return definition, form, pending, None


def _sync_refused(request, definition, form, exc: DomainError):
    if isinstance(exc, Forbidden) and not exc.errors:  # not the owner: the page says so (no sync form shown)
        return _refused(request, definition, exc)
    if isinstance(exc, Forbidden):  # a lab the caller may not copy: next to the field
        journal_page_refusal(request, exc)
    form.add_domain_error(exc)
    return _detail(request, definition, sync_form=form, status=exc.status_code)


@require_POST
@page(LABLET_DEFINITIONS)
async def definition_sync(request, public_id):
    """Pull the topology back from a CML lab (blank: the reference lab): a q task this request awaits on daphne
    without a thread (apps.lablets.services.awaited); CML's refusal shown on the page."""
    definition, form, pending, refused = await sync_to_async(_sync_begin)(request, public_id)
    if refused is not None:
        return await sync_to_async(_sync_refused)(request, definition, form, refused)
    if pending is None:
        return await sync_to_async(_detail)(request, definition, sync_form=form, status=422)
    try:
        synced = await lablet_definition_sync_finish(pending=pending)
    except DomainError as exc:
        return await sync_to_async(_sync_refused)(request, definition, form, exc)
    changed = "changed" if synced.content_hash != definition.content_hash else "is unchanged"
    messages.success(request, f"Synced from lab {synced.reference_lab_id} on {synced.reference_worker.name}: "
                              f"the topology {changed}.")
    return redirect("lablets:definition_detail", public_id=synced.public_id)
