"""The endpoints outside the seed's stable contract (GET /healthz, /debug/health, /active-session, /lab),
the seed's contract table row by row, and the rows of its per-endpoint tables the other files leave open.

The X-Session-ID contract table (seed "The X-Session-ID contract"), one row at a time
(`test_contract_table_row` drives every row: header required or not, unknown id, a non-active session):
    POST /session              no header, —          test_contract_table_row[POST /session];
                                                      test_api_sessions::test_create_answers_201_with_a_uuid4_and_position_0_when_a_worker_is_free
    GET /session/{id}          no header, —          test_contract_table_row[GET /session/{id}];
                                                      test_api_sessions::test_get_of_an_unknown_session_is_404_problem
    DELETE /session/{id}       no header, —          test_contract_table_row[DELETE /session/{id}];
                                                      test_api_sessions::test_delete_ends_the_session_answers_204_and_then_it_is_unknown
    POST /session/heartbeat    header, 404 missing   test_contract_table_row[POST /session/heartbeat];
                                                      test_api_sessions::test_heartbeat_answers_204_for_waiting_and_active_sessions,
                                                      ::test_heartbeat_of_an_unknown_session_is_404, ::test_heartbeat_without_the_header_is_422
    POST /lab                  header, 423           test_contract_table_row[POST /lab]; test_post_lab_without_the_header_is_422;
                                                      test_api_lab::test_acquire_by_a_waiting_session_is_423, ::test_acquire_with_an_unknown_session_is_404
    POST /lab/release          header, 423           test_contract_table_row[POST /lab/release];
                                                      test_api_lab::test_release_by_a_waiting_session_is_423, ::test_release_with_an_unknown_session_is_404
    DELETE /lab                header, 423           test_contract_table_row[DELETE /lab];
                                                      test_api_lab::test_destroy_with_an_unknown_session_is_404_and_waiting_is_423
    GET /lab/devices           header, 423           test_contract_table_row[GET /lab/devices];
                                                      test_api_lab::test_devices_without_a_lab_is_404_unknown_is_404_waiting_is_423

Per-endpoint tables of the seed:
    POST /session 201 {session_id uuid4, position}, 0 when promoted at once: test_api_sessions (create tests),
        field order here: test_response_fields_keep_the_seeds_order; 503 when the queue is full: test_queue
    GET /session/{id} 200 {status, position}, keep-alive: test_api_sessions::test_get_session_reports_status_position_and_the_extras,
        ::test_polling_refreshes_last_seen_at; 404: ::test_get_of_an_unknown_session_is_404_problem
    DELETE /session/{id} 204 + promotion: test_api_sessions::test_delete_of_the_active_session_promotes_the_next;
        404: ::test_delete_ends_the_session_answers_204_and_then_it_is_unknown;
        204 for an unknown id during shutdown: ::test_during_shutdown_deleting_an_unknown_session_answers_204,
        and a known one is still ended then: test_during_shutdown_a_known_session_is_still_ended
    POST /session/heartbeat 204 / 404: test_api_sessions (heartbeat tests); stale timeouts: test_reaping
    POST /lab 200 {reused, devices[name, raw]}: test_api_lab::test_acquire_starts_the_topology_on_the_workers_cml_and_lists_its_devices;
        400 no filename: test_a_topology_part_without_a_filename_is_400; 400 not .yml/.yaml:
        test_api_lab::test_a_topology_not_named_yml_or_yaml_is_400; 404/423: see the table above; 423 another
        topology: test_api_lab::test_a_different_topology_while_the_lab_is_in_use_is_423; reuse default "true" and
        SHA-256 identity: test_api_lab::test_the_same_content_under_another_name_is_reused,
        test_reuse_is_on_when_the_field_is_left_out; extra_files: test_uploads; multipart only:
        test_post_lab_takes_only_multipart
    POST /lab/release 204, 404 no lab, 404 unknown, 423: test_api_lab (release tests)
    DELETE /lab 202, 204, 409 force=false in use, 404, 423: test_api_lab (destroy tests)
    GET /lab/devices 200, 404 no lab, 404 unknown, 423: test_api_lab (devices tests)
    Not part of the contract: GET /healthz, GET /debug/health, GET /active-session, GET /lab: the tests below.
Access (401, 429) is in test_access, uploads (413, 422) in test_uploads.
"""

import hashlib
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.sessions import shutdown
from apps.sessions.models import Session
from apps.sessions.tasks import reap_sessions
from tests.factories import placeable_worker
from tests.sessions.conftest import BASE, TOPOLOGY, acquire, assert_problem, create, lab_call

pytestmark = pytest.mark.django_db
UNKNOWN_ID = "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"


# --- the contract table ---------------------------------------------------------------------------------

def _request(client, row, session_id):
    """Send the row's request for `session_id` (None: without the X-Session-ID header)."""
    method, path = row
    headers = {} if session_id is None or "{id}" in path else {"HTTP_X_SESSION_ID": str(session_id)}
    path = path.replace("{id}", str(session_id))
    if row == ("POST", "/lab"):
        return client.post(f"{BASE}{path}", {"topology": SimpleUploadedFile("t.yaml", TOPOLOGY)}, format="multipart",
                           **headers)
    return getattr(client, method.lower())(f"{BASE}{path}", **headers)


# (method, path): (header required, status for a WAITING session; None: the row has no such check)
CONTRACT = {
    ("POST", "/session"): (False, None),
    ("GET", "/session/{id}"): (False, None),
    ("DELETE", "/session/{id}"): (False, None),
    ("POST", "/session/heartbeat"): (True, 204),  # waiting sessions heartbeat too
    ("POST", "/lab"): (True, 423),
    ("POST", "/lab/release"): (True, 423),
    ("DELETE", "/lab"): (True, 423),
    ("GET", "/lab/devices"): (True, 423),
}


@pytest.mark.parametrize("row", list(CONTRACT), ids=[f"{m} {p}" for m, p in CONTRACT])
def test_contract_table_row(anon, worker, row):
    header_required, waiting_status = CONTRACT[row]
    create(anon)  # holds the only worker
    waiting = create(anon)["session_id"]

    if row == ("POST", "/session"):
        assert _request(anon, row, None).status_code == 201  # no header, no body
        return
    if header_required:
        assert "X-Session-ID" in assert_problem(_request(anon, row, None), 422)["errors"]
    assert_problem(_request(anon, row, UNKNOWN_ID), 404, "Session not found")
    if waiting_status == 423:
        assert_problem(_request(anon, row, waiting), 423, "Session is not active")
    elif waiting_status is not None:
        assert _request(anon, row, waiting).status_code == waiting_status
    else:
        # no active check on this row: a waiting session is read (200) or ended (204) like an active one
        assert _request(anon, row, waiting).status_code == {"GET": 200, "DELETE": 204}[row[0]]
    assert Session.objects.filter(status="waiting").count() == (0 if row == ("DELETE", "/session/{id}") else 1)


def test_post_lab_without_the_header_is_422(anon, worker, cml):
    response = anon.post(f"{BASE}/lab", {"topology": SimpleUploadedFile("t.yaml", TOPOLOGY)}, format="multipart")

    assert "X-Session-ID" in assert_problem(response, 422)["errors"]
    assert cml.calls["POST import"] == 0


# --- rows of the per-endpoint tables -------------------------------------------------------------------

@pytest.fixture
def active(anon, worker):
    return create(anon)["session_id"]


def test_a_topology_part_without_a_filename_is_400(anon, active, cml):
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="topology"\r\n\r\n'.encode() + TOPOLOGY
            + f"\r\n--{boundary}--\r\n".encode())

    response = anon.generic("POST", f"{BASE}/lab", body, content_type=f"multipart/form-data; boundary={boundary}",
                            HTTP_X_SESSION_ID=active)

    assert_problem(response, 400, "Topology file must have a filename")
    assert cml.calls["POST import"] == 0


def test_post_lab_takes_only_multipart(anon, active):
    response = anon.post(f"{BASE}/lab", {"topology": "x"}, format="json", HTTP_X_SESSION_ID=active)

    assert_problem(response, 415)


def test_reuse_is_on_when_the_field_is_left_out(anon, worker, cml):
    placeable_worker(session_pool="default")
    first = create(anon)["session_id"]
    acquire(anon, first)
    lab_call(anon, "post", "/lab/release", first)

    again = acquire(anon, first)  # no `reuse` field

    assert again.json()["reused"] is True and cml.calls["POST import"] == 1


def test_response_fields_keep_the_seeds_order(anon, active):
    created = anon.post(f"{BASE}/session")
    acquired = acquire(anon, active).json()

    assert list(created.json()) == ["session_id", "position"]
    assert list(acquired) == ["reused", "devices"]
    assert list(acquired["devices"][0]) == ["name", "raw"]


def test_during_shutdown_a_known_session_is_still_ended(anon, active):
    shutdown.begin_shutdown()

    assert anon.delete(f"{BASE}/session/{active}").status_code == 204
    assert Session.objects.get(pk=active).status == "ended"


# --- GET /healthz --------------------------------------------------------------------------------------

def test_healthz_answers_204_without_a_body_or_a_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = APIClient(REMOTE_ADDR="203.0.113.7").get(f"{BASE}/healthz")

    assert response.status_code == 204 and response.content == b""


# --- GET /debug/health ---------------------------------------------------------------------------------

def test_debug_health_reports_queue_length_sessions_uptime_and_pools(anon, operator_client, worker):
    create(anon), create(anon), create(anon)
    reap_sessions()  # a maintenance pass records the pool's usable workers

    response = operator_client.get(f"{BASE}/debug/health")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp", "uptime", "sessions", "queue_length", "shutting_down", "pools"}
    assert (body["status"], body["sessions"], body["queue_length"], body["shutting_down"]) == ("ok", 3, 2, False)
    assert abs(body["timestamp"] - time.time()) < 60 and body["uptime"] >= 0
    assert body["pools"] == [{"name": "default", "waiting": 2, "active": 1, "usable_workers": 1,
                              "avg_session_seconds": None}]


def test_debug_health_counts_only_live_sessions_and_shows_shutdown(anon, operator_client, worker):
    ended = create(anon)["session_id"]
    anon.delete(f"{BASE}/session/{ended}")
    shutdown.begin_shutdown()

    body = operator_client.get(f"{BASE}/debug/health").json()

    assert (body["sessions"], body["queue_length"], body["shutting_down"]) == (0, 0, True)


# --- GET /active-session (admins and operators only: tests/sessions/test_access.py) ----------------------

def test_active_session_without_one_is_404(anon, operator_client, db):
    create(anon)  # no worker: it waits

    assert_problem(operator_client.get(f"{BASE}/active-session"), 404, "No active session")


def test_active_session_returns_the_active_sessions_id(anon, operator_client, worker):
    active = create(anon)["session_id"]
    create(anon)

    response = operator_client.get(f"{BASE}/active-session")

    assert response.status_code == 200
    assert response.json() == {"session_id": active, "status": "active", "position": 0, "pool": "default",
                               "worker": worker.public_id}


def test_active_session_is_the_longest_active_and_follows_promotion(anon, operator_client, worker):
    placeable_worker(session_pool="default")
    first, second, third = (create(anon)["session_id"] for _ in range(3))
    assert operator_client.get(f"{BASE}/active-session").json()["session_id"] == first

    anon.delete(f"{BASE}/session/{first}")

    assert operator_client.get(f"{BASE}/active-session").json()["session_id"] == second
    assert Session.objects.get(pk=third).status == "active"


def test_active_session_of_another_pool(anon, operator_client, worker):
    gpu_worker = placeable_worker(session_pool="gpu")
    create(anon)
    gpu = create(anon, pool="gpu")["session_id"]

    body = operator_client.get(f"{BASE}/active-session?pool=gpu").json()

    assert (body["session_id"], body["pool"], body["worker"]) == (gpu, "gpu", gpu_worker.public_id)
    assert_problem(operator_client.get(f"{BASE}/active-session?pool=nope"), 404)


# --- GET /lab ------------------------------------------------------------------------------------------

def test_lab_status_before_any_lab_ran(anon, active, worker):
    response = lab_call(anon, "get", "/lab", active)

    assert response.status_code == 200
    assert response.json() == {"status": "empty", "worker": worker.public_id, "topology_sha256": "",
                               "topology_name": "", "cml_lab_id": "", "ref_count": 0, "devices": [],
                               "started_at": None}


def test_lab_status_of_the_running_lab(anon, active, worker, cml):
    acquired = acquire(anon, active, name="mine.yaml").json()

    body = lab_call(anon, "get", "/lab", active).json()

    assert list(body) == ["status", "worker", "topology_sha256", "topology_name", "cml_lab_id", "ref_count",
                          "devices", "started_at"]
    assert (body["status"], body["worker"], body["ref_count"]) == ("running", worker.public_id, 1)
    assert body["topology_sha256"] == hashlib.sha256(TOPOLOGY).hexdigest() and body["topology_name"] == "mine.yaml"
    assert body["cml_lab_id"] in cml.summary()["labs"]
    assert body["devices"] == acquired["devices"] and body["started_at"]


def test_lab_status_after_release_shows_the_idle_lab(anon, active):
    acquire(anon, active)
    lab_call(anon, "post", "/lab/release", active)

    body = lab_call(anon, "get", "/lab", active).json()

    assert (body["status"], body["ref_count"]) == ("running", 0)


def test_lab_status_unknown_is_404_and_waiting_is_423(anon, active):
    waiting = create(anon)["session_id"]

    assert_problem(lab_call(anon, "get", "/lab", str(uuid.uuid4())), 404, "Session not found")
    assert_problem(lab_call(anon, "get", "/lab", waiting), 423, "Session is not active")


def test_lab_status_is_the_sessions_own_workers(anon, worker):
    other = placeable_worker(session_pool="default")
    first, second = create(anon)["session_id"], create(anon)["session_id"]
    acquire(anon, first)

    assert lab_call(anon, "get", "/lab", first).json()["status"] == "running"
    body = lab_call(anon, "get", "/lab", second).json()
    assert (body["status"], body["worker"]) == ("empty", other.public_id)
    assert APIClient().get(f"{BASE}/lab", HTTP_X_SESSION_ID=second).status_code == 200
