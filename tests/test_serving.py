"""The serving topology: nginx (deploy/nginx/labmanager.conf.template) sends every async view and the
WebSocket routes to daphne, everything else to gunicorn; labmanager.asgi and labmanager.wsgi are plain
Django/Channels applications with nothing of ours in front."""

import inspect
import re
from pathlib import Path

from django.urls import URLPattern, URLResolver, get_resolver

from labmanager import asgi

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "labmanager.conf.template"


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield "/" + route, pattern.callback


def _sample(route: str) -> str:
    """A path the route matches: each parameter (`<str:id>`, `(?P<id>[^/.]+)`) becomes `inst-1`."""
    return re.sub(r"<[^>]+>|\(\?P<\w+>[^)]*\)", "inst-1", route)


def _is_async(callback) -> bool:
    view = getattr(callback, "view_class", None)
    return inspect.iscoroutinefunction(callback) or bool(view and getattr(view, "view_is_async", False))


def _locations() -> dict[str, str]:
    """{location as written ("= /path", "/prefix/", "~ regex"): upstream} of the template, in its order."""
    text = TEMPLATE.read_text()
    return {match[0].strip(): match[1] for match in
            re.findall(r"location\s+([^{]+?)\s*\{[^}]*?proxy_pass http://(\w+);", text)}


def _upstream_of(path: str) -> str:
    """The upstream nginx picks for `path`: an exact location; else the first regex location (`~`, `~*`)
    that matches, unless the longest matching prefix is a `^~` one; else that longest prefix."""
    locations = _locations()
    if f"= {path}" in locations:
        return locations[f"= {path}"]
    prefixes = [loc for loc in locations if loc[0] not in "=~" and path.startswith(loc.removeprefix("^~ "))]
    longest = max(prefixes, key=lambda loc: len(loc.removeprefix("^~ ")))
    if not longest.startswith("^~ "):
        for loc in locations:
            kind, _, regex = loc.partition(" ")
            if kind in ("~", "~*") and re.search(regex, path, re.IGNORECASE if kind == "~*" else 0):
                return locations[loc]
    return locations[longest]


def test_every_async_view_is_routed_to_daphne():
    async_routes = [_sample(route) for route, callback in _routes(get_resolver().url_patterns) if _is_async(callback)]

    assert "/api/events/stream" in async_routes  # the walk finds async views at all
    assert "/api/lablet-instances/inst-1/terminate" in async_routes  # and parameters become sample values
    assert {"/api/lablet-definitions/inst-1/sync", "/api/workers/inst-1/sync",
            "/dashboard/definitions/inst-1/sync"} <= set(async_routes)  # the page's sync awaits its q task too
    assert {route: _upstream_of(route) for route in async_routes} == {route: "labmanager_asgi" for route in async_routes}


def test_websockets_go_to_daphne_and_the_rest_to_gunicorn():
    ws_routes = ["/" + str(pattern.pattern) for pattern in asgi.websocket_urlpatterns]

    assert ws_routes and all(_upstream_of(route) == "labmanager_asgi" for route in ws_routes)
    for path in ("/api/remote-lab/session", "/api/remote-lab/session/heartbeat", "/api/lablet-instances",
                 "/dashboard/", "/admin/", "/static/vendor/chart.umd.min.js", "/metrics",
                 "/api/lablet-instances/inst-1", "/api/lablet-instances/inst-1/start-grading",
                 "/api/lablet-instances/inst-1/terminate/x", "/dashboard/lablet-instances/inst-1/terminate",
                 "/api/workers/inst-1", "/api/workers/inst-1/start", "/api/workers/inst-1/sync/x",
                 "/api/worker-templates/inst-1/sync", "/api/lablet-definitions/inst-1",
                 "/dashboard/lablet-definitions/inst-1/sync", "/dashboard/definitions/inst-1/",
                 "/dashboard/definitions/inst-1/deprecate", "/dashboard/definitions/inst-1/sync/x",
                 "/dashboard/instances/inst-1/terminate"):
        assert _upstream_of(path) == "labmanager_web", path
    for path in ("/api/lablet-instances/inst-1/terminate", "/api/lablet-instances/inst-1/start-collection",
                 "/api/lablet-definitions/inst-1/sync", "/api/workers/inst-1/sync",
                 "/dashboard/definitions/inst-1/sync"):
        assert _upstream_of(path) == "labmanager_asgi", path


def test_no_location_sets_its_own_proxy_headers():
    """A proxy_set_header inside a location drops every one of the server's (X-Forwarded-For among them)."""
    text = TEMPLATE.read_text()
    for block in re.findall(r"location\s+[^{]+\{([^}]*)\}", text):
        assert "proxy_set_header" not in block


def test_the_asgi_application_is_channels_routing_over_djangos_handler():
    from channels.routing import ProtocolTypeRouter
    from django.core.handlers.asgi import ASGIHandler

    assert isinstance(asgi.application, ProtocolTypeRouter)
    assert isinstance(asgi.application.application_mapping["http"], ASGIHandler)


def test_nothing_of_ours_parses_http_outside_django_drf_and_channels():
    root = Path(__file__).resolve().parents[1]
    sources = [p for d in ("apps", "labmanager") for p in (root / d).rglob("*.py")]
    offenders = [str(p.relative_to(root)) for p in sources
                 if re.search(r"scope\[\"type\"\]\s*==\s*\"http\"|http\.response\.start|a2wsgi|SimpleNamespace\(META",
                              p.read_text())]
    assert offenders == []


def test_the_proxy_passes_the_host_with_its_port_and_writes_x_forwarded_for_itself():
    """$host drops the port: CSRF's origin check and every absolute URL (redirects, Link) would lose it."""
    text = TEMPLATE.read_text()

    assert "proxy_set_header Host $http_host;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text  # never the client's own header
