"""schemathesis against the live server: every operation of the OpenAPI document, called with generated
requests (as an admin API key), answers only what the document declares: no 5xx, declared
statuses, content types, headers and bodies.

The live server is pytest-django's (in this process, threaded WSGI) on the test database: the run's writes
land there only. EC2 and CML are the simulators (tests/conftest.py); no q cluster runs, so nothing the run
enqueues (webhook deliveries, lab jobs) is carried out. The rate limits are raised for the run (the 429s
stay declared; tests/test_openapi.py checks that). Bounded: a few examples per operation, a time budget.
The SSE stream never ends on its own and is left out (it is not a request/response operation)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apps.identity.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance",
])
MAX_EXAMPLES = 4
MAX_SECONDS = 60  # the run's own budget; the subprocess's timeout below is a safety net
ST = Path(sys.executable).with_name("st")


@pytest.fixture
def raised_rate_limits(settings):
    settings.API_RATE_LIMIT = "1000000/min"
    settings.API_RATE_BURST = 1000000
    settings.API_ANON_RATE_LIMIT = "1000000/min"
    settings.LOGIN_RATE_LIMIT = "1000000/min"
    settings.SESSION_API_RATE_LIMIT = "1000000/min"


def _schemathesis(live_server, tmp_path, *headers: str) -> subprocess.CompletedProcess:
    command = [
        str(ST), "run", f"{live_server.url}/api/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_SECONDS),
        "--seed", "20",
        "--workers", "1",
        "--no-shrink",
        "--request-timeout", "30",
        "--max-redirects", "0",
        "--exclude-path", "/api/events/stream",
        "--report", "junit",
        "--report-dir", str(tmp_path),
    ]
    for header in headers:
        command += ["--header", header]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=MAX_SECONDS * 3, env=env,
                          cwd=tmp_path)  # its .schemathesis/ cache goes there, not into the work tree


@pytest.mark.skipif(shutil.which(str(ST)) is None, reason="schemathesis is a dev dependency (make setup)")
def test_every_operation_answers_as_the_document_says_for_an_admin_key(live_server, admin_user, raised_rate_limits,
                                                                        tmp_path):
    _, raw = api_key_create(user=admin_user, actor="tests")

    # Both ways an API key is sent: otherwise schemathesis makes up an Authorization header (the document's
    # bearer scheme), which is tried first and refused.
    result = _schemathesis(live_server, tmp_path, f"X-API-Key: {raw}", f"Authorization: Bearer {raw}")

    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
