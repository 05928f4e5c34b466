"""The production servers (bin/serve all: nginx, gunicorn, daphne) with the production profile on PostgreSQL
and Redis (127.0.0.1): API, login page, security headers, hashed static files, JSON log lines with the
request's trace_id."""

import json
import os
import re
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from apps.identity.services import api_key_create, user_ensure_with_role
from tests.deploy.conftest import ROOT, manage, production_env
from tests.events.conftest import server_process

pytestmark = [
    pytest.mark.skipif(not settings.IS_POSTGRES, reason="the production profile is exercised on PostgreSQL: "
                       "set DATABASE_URL=postgres://... (and REDIS_URL) to run it"),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production profile is exercised with Redis: "
                       "set REDIS_URL=redis://127.0.0.1:6379/N to run it"),
]
HTTPS = {"X-Forwarded-Proto": "https"}  # what the TLS-terminating proxy adds (SECURE_PROXY_SSL_HEADER)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """(url, log file) of the servers under labmanager.settings_production, static files collected first."""
    static_root = tmp_path_factory.mktemp("static")
    env = production_env(STATIC_ROOT=str(static_root), LOG_LEVEL="INFO", LOG_FORMAT="json")
    collected = manage("collectstatic", "--noinput", "-v0", env=env)
    assert collected.returncode == 0, collected.stderr
    extra = {key: env[key] for key in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS",
                                       "CSRF_TRUSTED_ORIGINS", "STATIC_ROOT", "LOG_LEVEL", "LOG_FORMAT")}
    with server_process(extra) as url:
        yield url, url.log


@pytest.fixture
def api_key(transactional_db):
    user, _ = user_ensure_with_role(username="deploy-operator", role="operator")
    return api_key_create(user=user, role="operator", name="deploy test")[1]


def test_health_and_readiness_answer_over_plain_http_for_probes(server):
    url, _ = server

    health = httpx.get(url + "/api/diagnostics/health", timeout=10)
    ready = httpx.get(url + "/api/diagnostics/ready", timeout=10)

    assert health.status_code == 200 and health.json() == {"status": "healthy"}
    assert ready.status_code == 200, ready.text  # PostgreSQL, Redis cache and channel layer, q broker
    assert "Strict-Transport-Security" not in health.headers  # HSTS goes out over HTTPS only


def test_other_plain_http_requests_are_redirected_to_https(server):
    url, _ = server

    response = httpx.get(url + "/api/workers", timeout=10)

    assert response.status_code == 301
    assert response.headers["Location"] == url.replace("http://", "https://") + "/api/workers"


def test_an_authenticated_api_call_over_https_carries_the_security_headers(server, api_key):
    url, _ = server

    response = httpx.get(url + "/api/workers", headers={**HTTPS, "X-API-Key": api_key}, timeout=10)
    anonymous = httpx.get(url + "/api/workers", headers=HTTPS, timeout=10)

    assert response.status_code == 200, response.text
    assert "workers" in response.json()
    assert anonymous.status_code == 401
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"  # no subdomains, no preload by default
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "script-src 'self';" in response.headers["Content-Security-Policy"]


def test_the_login_page_is_served_with_secure_cookies_and_hashed_static_files(server):
    url, _ = server

    page = httpx.get(url + "/accounts/login/", headers=HTTPS, timeout=10)

    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    csrf_cookie = next(c for c in page.headers.get_list("set-cookie") if c.startswith("csrftoken="))
    assert "Secure" in csrf_cookie
    stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page.text)
    assert stylesheets, "the page links its stylesheet"
    for path in stylesheets:
        assert re.search(r"\.[0-9a-f]{12}\.css$", path), f"{path}: not a hashed (manifest) name"
        asset = httpx.get(url + path, headers=HTTPS, timeout=10)
        assert asset.status_code == 200
        assert "immutable" in asset.headers.get("Cache-Control", "")


def test_requests_are_logged_as_json_lines_with_their_trace_id(server, api_key):
    url, log = server

    response = httpx.get(url + "/api/workers?limit=1", headers={**HTTPS, "X-API-Key": api_key}, timeout=10)
    trace_id = response.headers["X-Trace-Id"]

    lines = []
    for raw in log.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # every structured line parses
    mine = [line for line in lines if line.get("trace_id") == trace_id]
    assert mine, f"no log line with trace_id {trace_id}"
    assert mine[0]["logger"] == "labmanager.request"
    assert mine[0]["message"].startswith("GET /api/workers?limit=1 200 ")
    assert {"time", "level", "process"} <= set(mine[0])


def test_the_container_health_check_passes_against_the_running_server_and_fails_without_one(server):
    url, _ = server
    script = ROOT / "deploy" / "healthcheck.py"
    env = production_env(PORT=url.rsplit(":", 1)[1])

    up = subprocess.run([sys.executable, str(script), "web"], env=env, capture_output=True, text=True, timeout=30)
    down = subprocess.run([sys.executable, str(script), "web"], env={**env, "PORT": "1"}, capture_output=True,
                          text=True, timeout=30)

    assert up.returncode == 0, up.stderr
    assert down.returncode == 1 and "health check failed" in down.stderr


@pytest.mark.parametrize("path", ["/api/docs", "/api/redoc"])
def test_the_api_documentation_pages_have_no_inline_script_for_the_policy_to_block(server, path):
    url, _ = server

    page = httpx.get(url + path, headers=HTTPS, timeout=10)

    assert page.status_code == 200
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script\b([^>]*)>", page.text)
    assert scripts and all("src=" in attributes for attributes in scripts), scripts
