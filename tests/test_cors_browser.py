"""The seed's browser `LabletClient` (lablet-cloud-manager-api.txt, "JavaScript/TypeScript") used by a page of
another origin, in Chromium, against the production servers (bin/serve all: nginx in front of gunicorn and
daphne) with CORS_ALLOWED_ORIGINS naming that page's origin (docs/api.md#cross-origin-use-cors).

The page is served by a plain HTTP server of this test on 127.0.0.2 (another origin than the API's 127.0.0.1).
Its script is the seed's TypeScript class with the types stripped by hand (`private` parameter properties
written as assignments, `?:`/`: T`/`Promise<T>` annotations removed), otherwise verbatim, with one change:
the seed's `listInstances` builds its URL with `new URL('/lablet-instances', this.baseUrl)`, which drops the
base's `/api` path (an absolute path replaces it), so as published it calls `/lablet-instances` on the
server's root. The page keeps that line as `seedListUrl` (the test shows where it goes) and lists with
`new URL(this.baseUrl + '/lablet-instances')`, the fix docs/api.md gives integrators.

A page of an origin not in the list (127.0.0.1 on another port) is refused by the browser: its fetch rejects,
and the POST never reaches the server (the preflight is answered without the allow headers).
Non-browser checks of the same headers: tests/test_cors.py."""

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from apps.identity.services import api_key_create, user_ensure_with_role
from apps.lablets.models import LabletInstance
from tests.dashboard.conftest import BROWSER_MARKS, WAIT_MS, chromium  # noqa: F401 (a fixture)
from tests.events.conftest import server_process
from tests.factories import LabletDefinitionFactory

pytestmark = BROWSER_MARKS

# The seed's class, types stripped by hand (see the module's docstring); `seedListUrl` and the list fix added.
SEED_CLIENT_JS = """
class LabletClient {
  constructor(baseUrl, token) { this.baseUrl = baseUrl; this.token = token; }

  seedListUrl(status) {  // the seed's line, as published: resolves to the server's root, not under /api
    const url = new URL('/lablet-instances', this.baseUrl);
    if (status) url.searchParams.set('status', status);
    return url.toString();
  }

  async listInstances(status) {
    const url = new URL(this.baseUrl + '/lablet-instances');  // the seed: new URL('/lablet-instances', this.baseUrl)
    if (status) url.searchParams.set('status', status);
    const response = await fetch(url.toString(), {
      headers: { 'Authorization': `Bearer ${this.token}` }
    });
    if (!response.ok) throw new Error(response.statusText);
    return response.json();
  }

  async createInstance(data) {
    const response = await fetch(`${this.baseUrl}/lablet-instances`, {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${this.token}`,
        'Content-Type': 'application/json'
      },
      body: JSON.stringify(data)
    });
    if (!response.ok) throw new Error(response.statusText);
    return response.json();
  }
}
"""

PAGE = f"<!doctype html><title>LMS</title><script>{SEED_CLIENT_JS}</script><p>an LMS page</p>"


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def page_server(host: str):
    """The LMS page on http://<host>:<a free port>/ (another origin than the API's)."""
    server = ThreadingHTTPServer((host, 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _free_loopback(host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def lms_origin():
    if not _free_loopback("127.0.0.2"):
        pytest.skip("127.0.0.2 is not a loopback address here")
    with page_server("127.0.0.2") as origin:
        yield origin


@pytest.fixture(scope="module")
def other_origin():
    with page_server("127.0.0.1") as origin:
        yield origin


@pytest.fixture(scope="module")
def api(django_db_setup, django_db_blocker, lms_origin):
    with server_process({"CORS_ALLOWED_ORIGINS": lms_origin}) as url:
        yield url


@pytest.fixture
def key_and_definition(transactional_db):
    user, _ = user_ensure_with_role(username="lms-integration", role="instructor", actor="tests")
    _, key = api_key_create(user=user, actor="tests")
    return key, LabletDefinitionFactory(created_by=user, default_duration_minutes=120, max_duration_minutes=240)


SEED_INSTANCE = {"owner_id": "student-12345", "timeslot_start": "2030-01-20T09:00:00Z",
                 "timeslot_end": "2030-01-20T11:00:00Z"}

# Runs in the page: the seed's createInstance and a list call, then the headers a page reads from JS.
RUN_SEED_CLIENT = """async ([baseUrl, token, data]) => {
  const client = new LabletClient(baseUrl, token);
  const created = await client.createInstance(data);
  const listed = await client.listInstances('pending');
  const response = await fetch(baseUrl + '/lablet-instances?limit=1', {headers: {'Authorization': `Bearer ${token}`}});
  const read = (name) => response.headers.get(name);
  const replay = async () => {
    const answer = await fetch(`${baseUrl}/lablet-instances`, {method: 'POST',
      body: JSON.stringify({...data, owner_id: 'student-67890'}),  // another student: no timeslot conflict
      headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json', 'Idempotency-Key': 'lms-1'}});
    return [answer.status, answer.headers.get('Idempotent-Replayed')];
  };
  return {created, listed, seedListUrl: client.seedListUrl(),
          headers: {total: read('X-Total-Count'), link: read('Link'), limit: read('X-RateLimit-Limit'),
                    remaining: read('X-RateLimit-Remaining'), reset: read('X-RateLimit-Reset'),
                    trace: read('X-Trace-Id'), cookie: read('Set-Cookie')},
          idempotent: [await replay(), await replay()]};
}"""

RUN_CREATE_ONLY = """async ([baseUrl, token, data]) => {
  try {
    await new LabletClient(baseUrl, token).createInstance(data);
    return 'created';
  } catch (error) {
    return `${error.name}: ${error.message}`;
  }
}"""


def _page(chromium, origin):  # noqa: F811 (the fixture)
    context = chromium.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(origin + "/")
    return page


def test_a_page_of_an_allowed_origin_runs_the_seeds_javascript_client(chromium, api, lms_origin,  # noqa: F811
                                                                      key_and_definition):
    key, definition = key_and_definition
    page = _page(chromium, lms_origin)

    result = page.evaluate(RUN_SEED_CLIENT, [f"{api}/api", key, {"definition_id": definition.public_id,
                                                               **SEED_INSTANCE}])

    created = result["created"]
    assert created["id"].startswith("inst-") and created["status"] == "pending"
    assert created["definition_id"] == definition.public_id and created["owner_id"] == "student-12345"
    assert [item["id"] for item in result["listed"]["lablet_instances"]] == [created["id"]]
    headers = result["headers"]
    assert headers["total"] == "1"  # exposed: readable from the page's JavaScript
    assert 'rel="first"' in headers["link"]
    assert int(headers["limit"]) > int(headers["remaining"]) >= 0 and int(headers["reset"]) > 0
    assert len(headers["trace"]) == 32
    assert headers["cookie"] is None
    assert result["idempotent"] == [[201, None], [201, "true"]]  # Idempotency-Key passes the preflight
    assert result["seedListUrl"] == f"{api}/lablet-instances"  # the seed's line as published: not under /api
    assert LabletInstance.objects.filter(definition=definition).count() == 2
    page.context.close()


def test_a_page_of_an_origin_not_allowed_is_refused_by_the_browser(chromium, api, other_origin,  # noqa: F811
                                                                  key_and_definition):
    key, definition = key_and_definition
    page = _page(chromium, other_origin)

    outcome = page.evaluate(RUN_CREATE_ONLY, [f"{api}/api", key, {"definition_id": definition.public_id,
                                                                 **SEED_INSTANCE}])

    assert outcome.startswith("TypeError: Failed to fetch"), outcome
    assert LabletInstance.objects.filter(definition=definition).count() == 0  # the POST never left the browser
    page.context.close()


def test_nginx_passes_preflights_to_both_servers(api, lms_origin):
    """Paths nginx sends to daphne (the live stream, POST /lab) answer a preflight as gunicorn's do."""
    for path in ("/api/lablet-instances", "/api/remote-lab/lab", "/api/events/stream",
                 "/api/lablet-instances/inst-000000/terminate"):
        response = httpx.options(f"{api}{path}", timeout=10, headers={
            "Origin": lms_origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == lms_origin, path
        assert "access-control-allow-credentials" not in response.headers, path
