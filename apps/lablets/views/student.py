"""The student page: `/s/<token>`, no login (docs/dashboard.md#the-student-page, docs/security.md#student-links).

The token opens its own instance and nothing else: an unknown token is 404; a revoked, expired or ended
link is 410 with a page that says so. `/s/<token>/instances/<id>` is the page's poll (JSON): 404 for any
other instance's id. Every request is counted per client address (STUDENT_LINK_RATE_LIMIT, 429 beyond)."""

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from apps.lablets.selectors import lablet_instance_browser_consoles
from apps.lablets.services.student_links import (
    ACTIVE,
    student_link_expires_at,
    student_link_extend,
    student_link_may_extend,
    student_link_record_use,
    student_link_resolve,
)
from apps.api.buckets import Bucket, take
from apps.api.throttling import client_address, too_many_requests
from apps.core.errors import DomainError

GONE = {"revoked": "It was revoked.", "expired": "It has expired.", "ended": "The lab has ended."}


def _open(request, token):
    """(resolved link, None) for an active link; (None, response) for a refusal (429, 404, 410)."""
    decision = take(f"student:{client_address(request)}", Bucket.from_settings(settings.STUDENT_LINK_RATE_LIMIT))
    request.rate_limit = decision
    if not decision.allowed:
        return None, too_many_requests(request, decision, "Too many requests from your address.")
    found = student_link_resolve(token)
    if found is None:
        raise Http404("No such link.")
    if found.state != ACTIVE:
        return None, render(request, "lablets/student_gone.html", {"reason": GONE[found.state]}, status=410)
    student_link_record_use(link=found.link, address=client_address(request))
    return found, None


def _devices(instance) -> list[dict]:
    """The lab's devices: the topology's nodes (label, node definition), then any device a console entry or
    port definition names that the topology does not list; each with the names of its console entries."""
    from apps.workers.cml.topology_policy import topology_parse

    try:
        nodes = topology_parse(instance.definition.cml_lab_yaml).get("nodes")
    except Exception:  # a definition that no longer parses lists the devices its consoles name
        nodes = None
    devices: dict[str, dict] = {}
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, dict) and node.get("label"):
            devices.setdefault(str(node["label"]), {"label": str(node["label"]),
                                                    "kind": str(node.get("node_definition") or ""), "consoles": []})
    for entry in [*(instance.console or []), *(instance.definition.port_definitions or [])]:
        label = entry.get("device_name") if isinstance(entry, dict) else None
        if not label:
            continue
        device = devices.setdefault(str(label), {"label": str(label), "kind": "", "consoles": []})
        if entry.get("name") and entry["name"] not in device["consoles"]:
            device["consoles"].append(entry["name"])
    return list(devices.values())


def _state(found) -> dict:
    instance = found.instance
    booting = instance.nodes_booting
    now = timezone.now()
    browser = {entry["name"] for entry in lablet_instance_browser_consoles(instance=instance)}
    return {
        "id": instance.public_id,
        "status": instance.status,
        "step": instance.lifecycle_step if instance.status == "instantiating" else "",
        "nodes_booted": booting[0] if booting else None,
        "nodes_total": booting[1] if booting else None,
        "timeslot_start": instance.timeslot_start.isoformat(),
        "timeslot_end": instance.timeslot_end.isoformat(),
        "seconds_left": max(int((instance.timeslot_end - now).total_seconds()), 0),
        "link_expires_at": student_link_expires_at(found.link).isoformat(),
        "may_extend": student_link_may_extend(instance),
        "devices": _devices(instance),
        # Each console entry; `browser`: the page can open it (serial/telnet, the lab up, the port held), over
        # /ws/lablet-instances/<id>/consoles/<name> with the token as the subprotocol labmanager.bearer.<token>.
        "consoles": [{"name": c.get("name"), "device_name": c.get("device_name"), "host": c.get("host"),
                      "port": c.get("port"), "console_type": c.get("console_type"),
                      "browser": c.get("name") in browser} for c in instance.console or []],
    }


def _page(request, found, *, message="", error="", status=200):
    return render(request, "lablets/student_page.html",
                  {"state": _state(found), "message": message, "error": error, "token": request.resolver_match.kwargs["token"],
                   "extend_minutes": settings.STUDENT_LINK_EXTEND_MINUTES}, status=status)


@require_GET
def student_page(request, token):
    found, refused = _open(request, token)
    return refused or _page(request, found)


@require_GET
def student_instance(request, token, public_id):
    found, refused = _open(request, token)
    if refused:
        return refused
    if found.instance.public_id != public_id:
        raise Http404("No such instance.")
    response = JsonResponse(_state(found))
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def student_extend(request, token):
    found, refused = _open(request, token)
    if refused:
        return refused
    if not student_link_may_extend(found.instance):
        return _page(request, found, error="This lab cannot be extended.", status=409)
    try:
        found.link.instance = student_link_extend(link=found.link)
    except DomainError as exc:
        return _page(request, found, error=exc.detail, status=exc.status_code)
    return _page(request, found, message="Your lab was extended.")
