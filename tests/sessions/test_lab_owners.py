"""A lab outlives its session (kept for reuse), but only for its principal (issue 19): another principal's
session on the same worker never sees it (GET /lab, /lab/devices), never attaches to it (POST /lab starts a
fresh lab and the idle foreign one is torn down) and cannot release or destroy it. Anonymous clients cannot
be told apart: they are one principal, and an idle lab one of them left is the next one's to reuse (the seed's
contract), never a user's."""

import pytest

from apps.sessions.models import LabTeardown, SessionLab
from tests.sessions.conftest import BASE, acquire, assert_problem, create, lab_call

pytestmark = pytest.mark.django_db


def _lab(worker) -> SessionLab:
    return SessionLab.objects.get(worker=worker)


def _built_and_ended(client) -> tuple[str, dict]:
    """A session of `client` that built the lab and ended: the lab's CML id and its devices."""
    session_id = create(client)["session_id"]
    response = acquire(client, session_id)
    assert response.status_code == 200 and response.json()["reused"] is False
    devices = lab_call(client, "get", "/lab/devices", session_id).json()
    assert client.delete(f"{BASE}/session/{session_id}").status_code == 204
    return devices[0]["raw"]["lab_id"], devices


def test_another_users_session_on_the_worker_never_sees_or_reuses_the_lab_left_there(
        instructor_client, other_instructor_client, other_instructor, worker, cml, teardowns_run_inline):
    lab_id, devices = _built_and_ended(instructor_client)
    assert _lab(worker).status == "running" and lab_id in cml.summary()["labs"]  # idle, kept for its user
    other = create(other_instructor_client)["session_id"]  # the same (only) worker

    body = lab_call(other_instructor_client, "get", "/lab", other).json()
    assert (body["status"], body["cml_lab_id"], body["devices"], body["ref_count"]) == ("empty", "", [], 0)
    assert_problem(lab_call(other_instructor_client, "get", "/lab/devices", other), 404, "No lab running")
    assert_problem(lab_call(other_instructor_client, "post", "/lab/release", other), 404, "No lab running")
    assert lab_call(other_instructor_client, "delete", "/lab", other).status_code == 204  # no lab of its own there
    assert _lab(worker).cml_lab_id == lab_id  # and the other's is left alone

    with teardowns_run_inline(execute=True):
        response = acquire(other_instructor_client, other)  # the same topology, reuse=true by default

    assert response.status_code == 200 and response.json()["reused"] is False  # a fresh lab, not the other's
    fresh = response.json()["devices"]
    assert {d["raw"]["lab_id"] for d in fresh} != {lab_id}
    assert not {d["raw"]["console_key"] for d in fresh} & {d["raw"]["console_key"] for d in devices}
    assert lab_id not in cml.summary()["labs"] and not LabTeardown.objects.exists()  # the idle one torn down
    assert _lab(worker).owner_key == f"user:{other_instructor.pk}"


def test_the_same_users_next_session_reuses_its_lab(instructor_client, worker, cml):
    lab_id, devices = _built_and_ended(instructor_client)
    again = create(instructor_client)["session_id"]

    assert lab_call(instructor_client, "get", "/lab", again).json()["cml_lab_id"] == lab_id
    response = acquire(instructor_client, again)

    assert response.status_code == 200 and response.json() == {"reused": True, "devices": devices}


def test_an_anonymous_sessions_lab_stays_for_the_next_anonymous_session_and_no_user(
        anon, instructor_client, worker, cml):
    lab_id, devices = _built_and_ended(anon)  # anonymous clients are one principal: the seed's reuse is theirs
    assert _lab(worker).status == "running" and _lab(worker).owner_key == "anonymous"

    mine = create(instructor_client)["session_id"]  # a user's session on the worker: not the anonymous lab
    assert lab_call(instructor_client, "get", "/lab", mine).json()["cml_lab_id"] == ""
    assert_problem(lab_call(instructor_client, "get", "/lab/devices", mine), 404, "No lab running")
    assert instructor_client.delete(f"{BASE}/session/{mine}").status_code == 204

    again = create(anon)["session_id"]
    assert lab_call(anon, "get", "/lab", again).json()["cml_lab_id"] == lab_id
    assert acquire(anon, again).json() == {"reused": True, "devices": devices}


def test_an_anonymous_session_never_sees_a_users_lab(instructor_client, anon, worker, cml):
    lab_id, _ = _built_and_ended(instructor_client)
    session_id = create(anon)["session_id"]

    assert lab_call(anon, "get", "/lab", session_id).json()["cml_lab_id"] == ""
    assert_problem(lab_call(anon, "get", "/lab/devices", session_id), 404, "No lab running")
    response = acquire(anon, session_id)
    assert response.json()["reused"] is False and lab_id not in {d["raw"]["lab_id"] for d in response.json()["devices"]}
