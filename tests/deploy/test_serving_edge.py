"""The serving edge as production runs it (bin/serve: nginx in front of gunicorn and daphne, the production
profile), on PostgreSQL and Redis:

- every remote-lab answer, from gunicorn or from daphne, success or problem, carries the production security
  headers and a trace id, and its request log line (JSON) redacts secret query parameters;
- the client's address is the one its connection came from: X-Forwarded-For written by the client does not
  make it loopback, through nginx or straight to the application servers; a session records that address;
- apps.core.middleware.client_address, the one function that reads X-Forwarded-For (unit tests);
- gunicorn's graceful shutdown: SIGTERM to a worker sets apps.sessions.shutdown's flag there
  (deploy/gunicorn.conf.py, post_worker_init), and a DELETE /session in flight at that moment whose session
  is gone answers 204, where it answers 404 otherwise.
"""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import RequestFactory, override_settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.sessions.models import Session, SessionPool
from apps.core.middleware import ClientAddressMiddleware, _networks, client_address
from tests.deploy.conftest import production_env
from tests.events.conftest import (ROOT, ServerUrl, _free_port, gunicorn_workers, server_env, server_process,
                                  stop_group)

production_stack = pytest.mark.skipif(
    not (settings.IS_POSTGRES and os.environ.get("REDIS_URL")),
    reason="the production servers are exercised on PostgreSQL and Redis: set DATABASE_URL=postgres://... and "
           "REDIS_URL=redis://127.0.0.1:6379/N to run them")
HTTPS = {"X-Forwarded-Proto": "https"}  # what the TLS-terminating proxy in front of nginx sends
SHUTDOWN_LINE = "Shutting down: DELETE /session/{id} of unknown sessions now answers 204"
WAIT_SECONDS = 30  # every wait below is for a condition, bounded by this


def wait_for(condition, what: str, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def json_lines(log) -> list[dict]:
    return [json.loads(raw) for raw in log.read_text(errors="replace").splitlines() if raw.startswith("{")]


def request_line(server: ServerUrl, trace_id: str) -> dict:
    """The request log line (labmanager.request) of the request with this trace id."""
    return wait_for(lambda: next((line for line in json_lines(server.log) if line.get("trace_id") == trace_id
                                  and line["logger"] == "labmanager.request"), None), f"the log line of {trace_id}")


def production_server(**extra: str):
    """bin/serve all under labmanager.settings_production, JSON log lines at INFO."""
    env = production_env(LOG_LEVEL="INFO", LOG_FORMAT="json", **extra)
    keys = ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "LOG_LEVEL",
            "LOG_FORMAT", *extra)
    return server_process({key: env[key] for key in keys})


@pytest.fixture(scope="module")
def production(django_db_setup, django_db_blocker, tmp_path_factory):
    """Anonymous remote-lab clients allowed from 127.0.0.1 only."""
    with production_server(STATIC_ROOT=str(tmp_path_factory.mktemp("static")), SESSION_DEFAULT_POOL="default",
                           SESSION_ANONYMOUS_NETWORKS="127.0.0.1/32") as url:
        yield url


@pytest.fixture(scope="module")
def loopback_network(django_db_setup, django_db_blocker, tmp_path_factory):
    """Anonymous remote-lab clients allowed from all of 127.0.0.0/8."""
    with production_server(STATIC_ROOT=str(tmp_path_factory.mktemp("static")), SESSION_DEFAULT_POOL="default",
                           SESSION_ANONYMOUS_NETWORKS="127.0.0.0/8") as url:
        yield url


def client_from(address: str) -> httpx.Client:
    """An HTTPS-forwarded client whose connections come from `address` (any of 127.0.0.0/8 is this host)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), headers=HTTPS, timeout=15)


# --- the security headers and the log line of every remote-lab answer ---------------------------------------

def assert_production_headers(name: str, response: httpx.Response) -> None:
    headers = response.headers
    assert headers.get("Strict-Transport-Security") == "max-age=31536000", name  # no subdomains, no preload by default
    assert headers.get("X-Content-Type-Options") == "nosniff", name
    assert headers.get("Referrer-Policy") == "same-origin", name
    policy = headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in policy and "script-src 'self';" in policy, (name, policy)
    trace_id = headers.get("X-Trace-Id", "")
    assert len(trace_id) == 32 and int(trace_id, 16) >= 0, (name, trace_id)




@production_stack
@pytest.mark.django_db(transaction=True)
def test_every_remote_lab_answer_over_https_carries_the_security_headers_and_is_logged(production):
    api = production + "/api/remote-lab"
    with client_from("127.0.0.1") as http:
        created = http.post(f"{api}/session")
        session_id = created.json()["session_id"]
        answers = {  # (answer, status it must have)
            "POST /session": (created, 201),
            "GET /session/{id}": (http.get(f"{api}/session/{session_id}"), 200),
            "POST /session/heartbeat": (http.post(f"{api}/session/heartbeat", headers={"X-Session-ID": session_id}), 204),
            "GET /healthz": (http.get(f"{api}/healthz"), 204),
            "GET /session/{unknown}": (http.get(f"{api}/session/{uuid.uuid4()}"), 404),
            "GET unknown path": (http.get(f"{api}/no-such-thing"), 404),
            "POST /session, bad key": (http.post(f"{api}/session", headers={"X-API-Key": "lm_not-a-key"}), 401),
            # daphne's: POST /lab (an async view)
            "POST /lab, no X-Session-ID": (http.post(f"{api}/lab", files={"topology": ("t.yaml", b"x")}), 422),
            "POST /lab, bad key": (http.post(f"{api}/lab", headers={"X-API-Key": "lm_not-a-key"}), 401),
            "DELETE /session/{id}": (http.delete(f"{api}/session/{session_id}"), 204),
        }

    for name, (response, status) in answers.items():
        assert response.status_code == status, (name, response.text)
        assert_production_headers(name, response)
        if status >= 400:
            assert response.headers["Content-Type"] == "application/problem+json", name
            assert response.json()["trace_id"] == response.headers["X-Trace-Id"], name
        line = request_line(production, response.headers["X-Trace-Id"])  # through TraceIdMiddleware, every one
        assert line["message"].split()[2] == str(status), (name, line)


@production_stack
@pytest.mark.django_db(transaction=True)
def test_the_request_log_line_redacts_secret_query_parameters(production):
    api = production + "/api/remote-lab"
    with client_from("127.0.0.1") as http:
        created = http.post(f"{api}/session?pool=default&token=tok-17-secret")
        polled = http.get(f"{api}/session/{created.json()['session_id']}?access_token=at-17-secret&verbose=1")

    assert created.status_code == 201 and polled.status_code == 200
    assert request_line(production, created.headers["X-Trace-Id"])["message"].startswith(
        "POST /api/remote-lab/session?pool=default&token=[redacted] 201 ")
    assert request_line(production, polled.headers["X-Trace-Id"])["message"].startswith(
        f"GET /api/remote-lab/session/{created.json()['session_id']}?access_token=[redacted]&verbose=1 200 ")
    log = production.log.read_text(errors="replace")
    assert "tok-17-secret" not in log and "at-17-secret" not in log  # nowhere: no access log either


# --- the client's address on the wire ---------------------------------------------------------------------

@production_stack
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("forwarded_for", ["127.0.0.1", "127.0.0.1, 198.51.100.7", "198.51.100.7, 127.0.0.1"])
def test_x_forwarded_for_from_the_client_does_not_make_it_loopback(production, forwarded_for):
    api = "/api/remote-lab/session"
    claims = {"X-Forwarded-For": forwarded_for}
    with client_from("127.0.0.2") as other, client_from("127.0.0.1") as local:
        through_nginx = other.post(production + api, headers=claims)
        to_gunicorn = other.post(production.web + api, headers=claims)  # not through the proxy: not trusted
        lab_through_nginx = other.post(production + "/api/remote-lab/lab", headers=claims)  # daphne
        lab_to_daphne = other.post(production.asgi + "/api/remote-lab/lab", headers=claims)
        from_loopback = local.post(production + api, headers=claims)
        lab_from_loopback = local.post(production + "/api/remote-lab/lab", headers=claims)

    for name, response in {"through nginx": through_nginx, "to gunicorn": to_gunicorn,
                           "POST /lab through nginx": lab_through_nginx, "POST /lab to daphne": lab_to_daphne}.items():
        assert response.status_code == 401, (name, response.text)
        assert "SESSION_ANONYMOUS_NETWORKS" in response.json()["detail"], name
    assert from_loopback.status_code == 201, from_loopback.text
    assert lab_from_loopback.status_code == 422, lab_from_loopback.text  # allowed in; X-Session-ID missing


@production_stack
@pytest.mark.django_db(transaction=True)
def test_a_session_records_the_address_its_connection_came_from(loopback_network):
    with client_from("127.0.0.2") as other:
        created = other.post(loopback_network + "/api/remote-lab/session", headers={"X-Forwarded-For": "127.0.0.1"})

    assert created.status_code == 201, created.text
    session = Session.objects.get(pk=created.json()["session_id"])
    assert (session.client_ip, session.actor) == ("127.0.0.2", "anonymous@127.0.0.2")
    journalled = AuditEvent.objects.get(event_type="session.created", resource_id=str(session.pk))
    assert (journalled.ip_address, journalled.actor) == ("127.0.0.2", "anonymous@127.0.0.2")
    assert journalled.trace_id == created.headers["X-Trace-Id"]


# --- client_address (unit) ---------------------------------------------------------------------------------

PROXY = _networks(["127.0.0.1/32"])
PROXIES = _networks(["127.0.0.1/32", "10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(("peer", "forwarded_for", "trusted", "client"), [
    # an untrusted peer is the client, whatever it wrote
    ("198.51.100.7", "127.0.0.1", PROXY, "198.51.100.7"),
    ("127.0.0.2", "127.0.0.1", PROXY, "127.0.0.2"),
    ("10.1.2.3", "127.0.0.1, 203.0.113.9", PROXY, "10.1.2.3"),
    # a trusted peer: the right-most hop that is not a trusted proxy
    ("127.0.0.1", "203.0.113.9", PROXY, "203.0.113.9"),
    ("127.0.0.1", "127.0.0.1, 203.0.113.9", PROXY, "203.0.113.9"),  # what the client wrote first is ignored
    ("127.0.0.1", " 198.51.100.7 ,203.0.113.9 ", PROXY, "203.0.113.9"),
    # chains of trusted proxies: walked through, right to left
    ("127.0.0.1", "203.0.113.9, 10.0.0.5", PROXIES, "203.0.113.9"),
    ("127.0.0.1", "127.0.0.1, 203.0.113.9, 10.0.0.5, 10.7.0.1", PROXIES, "203.0.113.9"),
    ("127.0.0.1", "10.0.0.5, 10.7.0.1", PROXIES, "10.0.0.5"),  # all proxies: the farthest one known
    ("::1", "2001:db8::1", PROXIES, "2001:db8::1"),
    ("::1", "2001:db8::1, 10.0.0.5", PROXIES, "2001:db8::1"),
    # a trusted peer that forwarded nothing
    ("127.0.0.1", None, PROXY, "127.0.0.1"),
    ("127.0.0.1", "", PROXY, "127.0.0.1"),
    # malformed entries where an address is needed: unknown (""), never the proxy's own loopback address
    ("127.0.0.1", "203.0.113.9, not-an-address", PROXY, ""),
    ("127.0.0.1", "203.0.113.9:5555", PROXY, ""),
    ("127.0.0.1", "unix:", PROXY, ""),
    ("127.0.0.1", "203.0.113.9, unknown, 10.0.0.5", PROXIES, ""),
    ("127.0.0.1", "not-an-address, 203.0.113.9", PROXY, "203.0.113.9"),  # left of the answer: never read
    # no trusted proxies: X-Forwarded-For is never read
    ("127.0.0.1", "203.0.113.9", (), "127.0.0.1"),
    ("198.51.100.7", "127.0.0.1", (), "198.51.100.7"),
    # a peer that is not an address (a unix socket) stays as it is
    ("", "203.0.113.9", PROXY, ""),
    (None, "203.0.113.9", PROXY, None),
])
def test_client_address(peer, forwarded_for, trusted, client):
    assert client_address(peer, forwarded_for, trusted) == client


@pytest.mark.parametrize(("trusted", "remote_addr"), [([], "127.0.0.1"), (["127.0.0.1/32"], "203.0.113.9"),
                                                      (["10.0.0.0/8"], "127.0.0.1")])
def test_the_middleware_sets_remote_addr_from_trusted_proxies_only(trusted, remote_addr):
    seen = {}

    def view(request):
        seen["REMOTE_ADDR"] = request.META["REMOTE_ADDR"]

    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7, 203.0.113.9")
    with override_settings(TRUSTED_PROXIES=trusted):
        ClientAddressMiddleware(view)(request)

    assert seen["REMOTE_ADDR"] == remote_addr


# --- gunicorn's graceful shutdown --------------------------------------------------------------------------

@contextlib.contextmanager
def gunicorn_alone(**extra: str):
    """`bin/serve web` alone (gunicorn, no proxy) on a free port against the test database; yields its
    ServerUrl (the same as `.web`)."""
    port = _free_port()
    log = open(f"/tmp/web-server-{port}.log", "wb")
    env = {**server_env(), "WEB_BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "INFO", **extra}
    process = subprocess.Popen([str(ROOT / "bin" / "serve"), "web"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.web, url.asgi, url.log, url.process = str(url), "", Path(log.name), process

    def answers():
        if process.poll() is not None:
            raise AssertionError(f"bin/serve web ended (see {log.name})")
        try:
            return httpx.get(url + "/api/diagnostics/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "gunicorn to answer", timeout=60)
        yield url
    finally:
        stop_group(process, grace=15)
        log.close()


def shutdown_lines(server) -> list[str]:
    return [raw for raw in server.log.read_text(errors="replace").splitlines() if SHUTDOWN_LINE in raw]


@pytest.mark.django_db(transaction=True)
def test_sigterm_to_a_gunicorn_worker_sets_the_shutdown_flag_in_that_worker_and_a_new_one_takes_over():
    profile = production_env(LOG_FORMAT="json")  # JSON lines name their process
    with gunicorn_alone(WEB_PROCESSES="2", **{key: profile[key] for key in (
            "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS", "LOG_FORMAT")}) as web:
        workers = gunicorn_workers(web)
        assert len(workers) == 2, workers
        assert shutdown_lines(web) == []

        os.kill(workers[0], signal.SIGTERM)

        lines = wait_for(lambda: shutdown_lines(web), "the shutdown log line")
        def replaced():
            now = gunicorn_workers(web)
            return now if len(now) == 2 and workers[0] not in now else None

        replaced = wait_for(replaced, "gunicorn to replace the worker")
        assert workers[1] in replaced  # the other worker goes on, and did not log a shutdown
        assert len(shutdown_lines(web)) == 1
        assert json.loads(lines[0])["process"] == workers[0]  # logged by the worker that got SIGTERM
        assert httpx.get(web + "/api/remote-lab/healthz", headers=HTTPS, timeout=10).status_code == 204


def _waiting_on_a_lock() -> bool:
    """Another backend of this database waits for a lock (a row lock this test holds)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees its first snapshot throughout
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def _end_while_a_delete_waits(web, *, sigterm_worker: int | None) -> httpx.Response:
    """DELETE /session/{id} of a waiting session, held on the pool's row lock (this test holds it) while the
    session is ended behind its back (and, if told, its worker is sent SIGTERM meanwhile); its answer."""
    session_id = httpx.post(web + "/api/remote-lab/session", timeout=15).json()["session_id"]
    answer = {}

    def delete():
        answer["response"] = httpx.delete(f"{web}/api/remote-lab/session/{session_id}", timeout=WAIT_SECONDS)

    deleting = threading.Thread(target=delete)
    with transaction.atomic():
        pool = Session.objects.get(pk=session_id).pool_id
        SessionPool.objects.select_for_update().get(pk=pool)
        deleting.start()
        wait_for(lambda: _waiting_on_a_lock() or answer, "the DELETE to wait for the pool's lock")
        assert not answer, f"the DELETE did not wait for the pool's lock: {answer['response'].status_code} {answer['response'].text}"
        if sigterm_worker:
            os.kill(sigterm_worker, signal.SIGTERM)
            wait_for(lambda: shutdown_lines(web), "the shutdown log line")
        Session.objects.filter(pk=session_id).update(status="ended", ended_at=timezone.now(), end_reason="meanwhile")
    deleting.join(WAIT_SECONDS)
    assert not deleting.is_alive()
    return answer["response"]


@pytest.mark.skipif(not settings.IS_POSTGRES, reason="holds a row lock: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_delete_in_flight_when_its_worker_gets_sigterm_answers_204_for_a_session_gone_meanwhile():
    with gunicorn_alone(WEB_PROCESSES="1") as web:
        (worker,) = gunicorn_workers(web)

        untouched = _end_while_a_delete_waits(web, sigterm_worker=None)
        stopping = _end_while_a_delete_waits(web, sigterm_worker=worker)

        assert untouched.status_code == 404, untouched.text  # the session was gone: "Session not found"
        assert stopping.status_code == 204, stopping.text  # the worker was shutting down: no error for the client
        wait_for(lambda: worker not in gunicorn_workers(web) and len(gunicorn_workers(web)) == 1,
                 "gunicorn to replace the worker")
