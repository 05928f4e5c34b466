"""The OpenAPI document and the two documentation pages, which must work offline (no CDN)."""

import re

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/workers",
    "/api/workers/{id}",
    "/api/workers/{id}/start",
    "/api/workers/{id}/stop",
    "/api/lablet-definitions",
    "/api/lablet-definitions/{id}",
    "/api/lablet-definitions/{id}/sync",
    "/api/lablet-instances",
    "/api/lablet-instances/{id}",
    "/api/lablet-instances/{id}/start-collection",
    "/api/lablet-instances/{id}/start-grading",
    "/api/lablet-instances/{id}/extend",
    "/api/lablet-instances/{id}/terminate",
    "/api/diagnostics/health",
    "/api/diagnostics/ready",
]
LISTS = {"/api/workers": "workers", "/api/lablet-definitions": "lablet_definitions", "/api/lablet-instances": "lablet_instances"}
ASSET_URL = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)


@pytest.fixture(scope="module")
def schema():
    response = Client().get("/api/openapi.json")  # anonymous, touches no table: fetched once per module
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/vnd.oai.openapi+json"
    return response.json()


def _resolve(schema, ref: str) -> dict:
    assert ref.startswith("#/components/schemas/"), ref
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _json_schema(operation: dict, status: str) -> dict:
    content = operation["responses"][status]["content"]
    return next(iter(content.values()))["schema"]


def test_the_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "openapi.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    document = yaml.safe_load(target.read_text())
    assert document["openapi"].startswith("3.")
    assert "/api/workers" in document["paths"]


def test_it_serves_every_path_without_a_trailing_slash(schema):
    assert set(PATHS) <= set(schema["paths"])
    assert [path for path in schema["paths"] if path.endswith("/")] == []


@pytest.mark.parametrize("path, key", LISTS.items())
def test_list_responses_are_one_envelope_object(schema, path, key):
    body = _json_schema(schema["paths"][path]["get"], "200")

    assert "$ref" in body, f"{path} list answers an envelope object, not {body}"
    envelope = _resolve(schema, body["$ref"])
    assert {key, "total", "limit", "offset"} <= set(envelope["properties"])
    assert envelope["properties"][key]["type"] == "array"
    assert {key, "total", "limit", "offset"} <= set(envelope["required"])


def test_list_operations_document_paging_parameters(schema):
    names = {p["name"] for p in schema["paths"]["/api/lablet-instances"]["get"]["parameters"]}

    assert {"limit", "offset", "sort", "order", "status"} <= names


@pytest.mark.parametrize(
    "path, method, status",
    [
        ("/api/workers", "get", "401"),
        ("/api/workers", "post", "422"),
        ("/api/workers/{id}", "get", "404"),
        ("/api/workers/{id}/start", "post", "409"),
        ("/api/lablet-instances/{id}/extend", "post", "422"),
        ("/api/lablet-definitions/{id}", "put", "403"),
        ("/api/lablet-definitions/{id}/sync", "post", "502"),
        ("/api/diagnostics/ready", "get", "503"),
    ],
)
def test_error_responses_reference_the_problem_schema(schema, path, method, status):
    body = _json_schema(schema["paths"][path][method], status)

    problem = _resolve(schema, body["$ref"])
    assert body["$ref"] == "#/components/schemas/Problem"
    assert {"type", "title", "status", "detail", "instance", "trace_id"} <= set(problem["properties"])


def test_security_schemes_include_the_api_key_header_and_bearer(schema):
    schemes = list(schema["components"]["securitySchemes"].values())

    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"} in [
        {k: s.get(k) for k in ("type", "in", "name")} for s in schemes
    ]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes)
    assert schema["paths"]["/api/workers"]["get"]["security"]


@pytest.mark.parametrize("path", ["/api/diagnostics/health", "/api/diagnostics/ready"])
def test_the_diagnostics_need_no_credentials(schema, path):
    operation = schema["paths"][path]["get"]

    # No operation-level requirement and no document-wide default: anonymous.
    assert operation.get("security", []) in ([], [{}])
    assert "security" not in schema


@pytest.mark.parametrize("path", ["/api/docs", "/api/redoc"])
def test_the_documentation_pages_load_only_local_assets(path):
    client = Client()
    response = client.get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = ASSET_URL.findall(html)
    assert assets, "the page loads its UI from static files"
    assert all(url.startswith(("/static/", f"{path}?script")) for url in assets), assets  # no inline script
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", html), "no CDN URLs"
    if path == "/api/docs":  # the init script is served from /api/docs?script (no inline script)
        html += client.get(f"{path}?script").content.decode()
    assert "/api/openapi.json" in html

    asset = client.get(next(url for url in assets if url.endswith(".js")))
    assert asset.status_code == 200
    assert b"".join(asset.streaming_content)


# --- what the shared plumbing adds (apps.api.schema.complete_operations) --------------------------------

def _operations(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


IDEMPOTENT = {
    ("/api/workers", "post"), ("/api/worker-templates", "post"), ("/api/lablet-definitions", "post"),
    ("/api/lablet-instances", "post"), ("/api/lablet-instances/bulk", "post"),
}
UNCOUNTED = {"/api/diagnostics/health", "/api/diagnostics/ready", "/api/remote-lab/healthz", "/api/events/stream",
             "/api/auth/callback", "/api/auth/logout"}  # probes, the live stream, plain views no bucket counts


def test_the_problem_schema_declares_the_stable_codes(schema):
    from apps.core.errors import CODES

    problem = schema["components"]["schemas"]["Problem"]

    assert "code" in problem["required"]
    ref = problem["properties"]["code"]["allOf"][0]["$ref"]
    assert set(_resolve(schema, ref)["enum"]) == set(CODES)


def test_every_code_a_domain_error_carries_is_declared_and_documented():
    from pathlib import Path

    from apps.core import errors

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    api_doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    codes = {cls.code for cls in [errors.DomainError, *subclasses(errors.DomainError)]}
    assert codes <= set(errors.CODES)
    assert [code for code in errors.CODES if f"`{code}`" not in api_doc] == []


def test_every_response_declares_the_trace_id_header(schema):
    missing = [(path, method, status) for path, method, operation in _operations(schema)
               for status, response in operation["responses"].items()
               if not response.get("headers", {}).get("X-Trace-Id", {}).get("required")]

    assert missing == []


def test_counted_operations_declare_the_rate_limit_headers_and_429(schema):
    for path, method, operation in _operations(schema):
        counted = path not in UNCOUNTED
        for status, response in operation["responses"].items():
            headers = response.get("headers", {})
            assert ("X-RateLimit-Remaining" in headers) == counted, (path, method, status)
        if counted and path != "/api/auth/login":
            assert {"401", "429"} <= set(operation["responses"]), (path, method)


def test_me_declares_the_429_schemathesis_found(schema):
    responses = schema["paths"]["/api/auth/me"]["get"]["responses"]

    assert _json_schema(schema["paths"]["/api/auth/me"]["get"], "429")["$ref"] == "#/components/schemas/Problem"
    assert responses["429"]["headers"]["Retry-After"]["required"]
    assert responses["200"]["headers"]["X-RateLimit-Limit"]["required"]


def test_every_429_and_503_declares_retry_after(schema):
    missing = [(path, method, status) for path, method, operation in _operations(schema)
               for status, response in operation["responses"].items()
               if status in ("429", "503") and "Retry-After" not in response.get("headers", {})]

    assert missing == []


@pytest.mark.parametrize("path", [*LISTS, "/api/audit/events", "/api/webhooks", "/api/webhooks/{id}/deliveries"])
def test_lists_declare_the_paging_headers(schema, path):
    headers = schema["paths"][path]["get"]["responses"]["200"]["headers"]

    assert headers["X-Total-Count"]["required"] and headers["Link"]["required"]


def test_idempotency_key_is_declared_exactly_where_it_is_honoured(schema):
    declared = {(path, method) for path, method, operation in _operations(schema)
                if any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in operation.get("parameters", []))}

    assert declared == IDEMPOTENT
    created = schema["paths"]["/api/lablet-instances"]["post"]["responses"]["201"]["headers"]
    assert created["Idempotent-Replayed"]["schema"]["enum"] == ["true"]


@pytest.mark.parametrize("path, method, status", [
    ("/api/workers/{id}", "get", "404"),
    ("/api/lablet-instances", "post", "400"),
    ("/api/lablet-instances", "post", "415"),
    ("/api/lablet-instances", "get", "422"),
    ("/api/scheduler/status", "get", "403"),
])
def test_generic_statuses_are_declared_where_they_occur(schema, path, method, status):
    assert _json_schema(schema["paths"][path][method], status)["$ref"] == "#/components/schemas/Problem"


def test_the_sign_in_endpoints_are_in_the_document(schema):
    paths = schema["paths"]

    assert set(paths["/api/auth/login"]["get"]["responses"]) == {"302", "429", "503"}
    assert set(paths["/api/auth/callback"]["get"]["responses"]) == {"302"}
    assert set(paths["/api/auth/logout"]["post"]["responses"]) == {"302", "403"}
    assert set(paths["/api/auth/logout"]["get"]["responses"]) == {"405"}
    assert paths["/api/auth/login"]["get"]["responses"]["302"]["headers"]["Location"]["required"]


@pytest.mark.parametrize("method, path, status", [
    ("get", "/api/auth/login", 302),
    ("get", "/api/auth/callback", 302),
    ("get", "/api/auth/logout", 405),
])
def test_the_sign_in_endpoints_answer_what_the_document_says(method, path, status):
    response = getattr(Client(), method)(path)

    assert response.status_code == status
    assert response["X-Trace-Id"]


def test_logout_without_the_csrf_token_is_the_declared_403():
    response = Client(enforce_csrf_checks=True).post("/api/auth/logout")

    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/problem+json")
