"""Cross-origin use of /api (django-cors-headers, docs/api.md#cross-origin-use-cors), through the Django test
client: preflights from an allowed and a refused origin, the headers a page may read, nothing outside /api,
no cookies across origins, and a preflight that needs no credentials and is neither counted nor journalled.
The browser's view of the same: tests/test_cors_browser.py."""

import pytest

from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

LMS = "http://lms.example.org"
ELSEWHERE = "http://evil.example.net"
SEED_HEADERS = ("authorization", "content-type", "idempotency-key")
EXPOSED = {"x-total-count", "link", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
           "retry-after", "x-trace-id"}


@pytest.fixture(autouse=True)
def _allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [LMS]


def preflight(client, path="/api/lablet-instances", *, origin=LMS, method="POST", headers=SEED_HEADERS):
    return client.options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
                          HTTP_ACCESS_CONTROL_REQUEST_HEADERS=", ".join(headers))


def _names(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def _last_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_a_preflight_from_an_allowed_origin_allows_the_seed_clients_request_without_credentials(client):
    response = preflight(client)

    assert response.status_code == 200, response.content
    assert response["Access-Control-Allow-Origin"] == LMS
    assert set(SEED_HEADERS) <= _names(response["Access-Control-Allow-Headers"])
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
    assert "Access-Control-Allow-Credentials" not in response  # no cookies across origins
    assert "origin" in _names(response["Vary"])
    assert response["X-Trace-Id"]  # the edge's own middleware still runs around it


def test_a_preflight_from_an_origin_not_allowed_gets_no_cors_headers(client):
    response = preflight(client, origin=ELSEWHERE)

    assert not any(name.lower().startswith("access-control-") for name in response.headers)


def test_with_no_origin_configured_no_origin_is_allowed(client, settings):
    settings.CORS_ALLOWED_ORIGINS = []

    response = preflight(client)

    assert "Access-Control-Allow-Origin" not in response


def test_a_preflight_is_not_counted_refused_nor_journalled(client, settings):
    """Preflights carry no credentials: answered before authentication, the throttle and the journal. One
    anonymous request a minute is allowed here, and after ten preflights the first is still a 401, not 429."""
    settings.API_ANON_RATE_LIMIT = "1/min"
    before = _last_pk()

    for method in ("POST", "DELETE", "PATCH", "GET", "POST", "DELETE", "PATCH", "GET", "POST", "DELETE"):
        response = preflight(client, "/api/workers/wkr-000000", method=method)
        assert response.status_code == 200
        assert not any(name.startswith("X-RateLimit-") for name in response.headers)

    assert client.get("/api/workers", HTTP_ORIGIN=LMS).status_code == 401
    assert AuditEvent.objects.filter(pk__gt=before).count() == 0


def test_answers_to_an_allowed_origin_expose_the_headers_a_page_reads(instructor_client):
    listed = instructor_client.get("/api/lablet-instances", HTTP_ORIGIN=LMS)

    assert listed.status_code == 200
    assert listed["Access-Control-Allow-Origin"] == LMS
    assert EXPOSED <= _names(listed["Access-Control-Expose-Headers"])
    assert "Access-Control-Allow-Credentials" not in listed
    assert {"X-Total-Count", "Link", "X-RateLimit-Remaining", "X-Trace-Id"} <= set(listed.headers)


def test_refusals_carry_the_cors_headers_so_the_page_can_read_the_problem(anon_client, settings):
    settings.API_ANON_RATE_LIMIT = "1/min"

    refused = anon_client.get("/api/lablet-instances", HTTP_ORIGIN=LMS)
    throttled = anon_client.get("/api/lablet-instances", HTTP_ORIGIN=LMS)

    assert (refused.status_code, throttled.status_code) == (401, 429)
    for response in (refused, throttled):
        assert response["Access-Control-Allow-Origin"] == LMS
        assert response["Content-Type"].startswith("application/problem+json")
    assert throttled["Retry-After"]


def test_paths_outside_the_api_get_no_cors_headers(client):
    for path in ("/dashboard/", "/accounts/login/", "/admin/login/", "/metrics"):
        response = preflight(client, path, method="GET")
        assert "Access-Control-Allow-Origin" not in response, path
        assert "Access-Control-Allow-Origin" not in client.get(path, HTTP_ORIGIN=LMS), path
