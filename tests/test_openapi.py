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
