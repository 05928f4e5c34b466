"""The seed's /lab rows: POST /lab, POST /lab/release, DELETE /lab, GET /lab/devices (and GET /lab),
with reuse and reference counting, on the CML simulator."""

import hashlib

import pytest

from apps.sessions.models import LabClaim, LabTeardown, SessionLab
from tests.factories import placeable_worker
from tests.sessions.conftest import BASE, OTHER_TOPOLOGY, TOPOLOGY, acquire, assert_problem, create, lab_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def active(anon, worker):
    return create(anon)["session_id"]


@pytest.fixture
def waiting(anon, active):
    return create(anon)["session_id"]


def _lab(worker) -> SessionLab:
    return SessionLab.objects.get(worker=worker)


# --- POST /lab ---------------------------------------------------------------------------------------

def test_acquire_starts_the_topology_on_the_workers_cml_and_lists_its_devices(anon, active, worker, cml):
    response = acquire(anon, active)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["reused"] is False
    assert [d["name"] for d in body["devices"]] == ["router1", "router2"]
    raw = body["devices"][0]["raw"]
    assert {"id", "label", "node_definition", "state", "console_key", "lab_id", "worker_id"} <= set(raw)
    assert raw["state"] == "BOOTED" and raw["worker_id"] == worker.public_id
    lab = _lab(worker)
    assert (lab.status, lab.ref_count, lab.topology_sha256) == ("running", 1, hashlib.sha256(TOPOLOGY).hexdigest())
    assert cml.summary()["labs"][lab.cml_lab_id]["state"] == "BOOTED"
    assert cml.calls["POST import"] == 1


@pytest.mark.parametrize("name", ["topo.yml", "topo.yaml", "TOPO.YML", "Topo.YaMl"])
def test_both_suffixes_are_accepted_in_any_case(anon, active, name):
    assert acquire(anon, active, name=name).status_code == 200


@pytest.mark.parametrize("name", ["topology.json", "topology.yml.txt", "topology"])
def test_a_topology_not_named_yml_or_yaml_is_400(anon, active, name, cml):
    assert_problem(acquire(anon, active, name=name), 400, "Topology must be a .yml or .yaml file")
    assert cml.calls["POST import"] == 0


def test_a_missing_topology_is_422(anon, active):
    response = anon.post(f"{BASE}/lab", {"reuse": "true"}, format="multipart", HTTP_X_SESSION_ID=active)

    assert "topology" in assert_problem(response, 422)["errors"]


def test_acquire_with_an_unknown_session_is_404(anon, worker):
    assert_problem(acquire(anon, "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"), 404, "Session not found")


def test_acquire_by_a_waiting_session_is_423(anon, waiting, cml):
    assert_problem(acquire(anon, waiting), 423, "Session is not active")
    assert cml.calls["POST import"] == 0


def test_the_same_content_under_another_name_is_reused(anon, active, worker, cml):
    first = acquire(anon, active, name="a.yaml").json()
    again = acquire(anon, active, name="b.yml").json()

    assert (first["reused"], again["reused"]) == (False, True)
    assert again["devices"] == first["devices"]
    assert cml.calls["POST import"] == 1
    assert _lab(worker).ref_count == 1  # a session holds at most one claim


def test_reuse_after_another_session_released_attaches_and_counts_its_claim(anon, worker, cml):
    first = create(anon)["session_id"]
    acquire(anon, first)
    lab_call(anon, "post", "/lab/release", first)
    anon.delete(f"{BASE}/session/{first}")
    second = create(anon)["session_id"]

    body = acquire(anon, second, reuse="true").json()

    assert body["reused"] is True
    assert cml.calls["POST import"] == 1
    assert _lab(worker).ref_count == 1
    assert LabClaim.objects.get().session_id.hex == second.replace("-", "")


def test_a_different_topology_while_the_lab_is_in_use_is_423(anon, active, cml):
    acquire(anon, active)

    assert_problem(acquire(anon, active, topology=OTHER_TOPOLOGY), 423, "Lab currently busy")
    assert cml.calls["POST import"] == 1


def test_reuse_false_while_in_use_is_423(anon, active):
    acquire(anon, active)

    assert_problem(acquire(anon, active, reuse="false"), 423)


def test_an_idle_lab_of_another_topology_is_torn_down_and_replaced(anon, active, worker, cml, teardowns_run_inline):
    acquire(anon, active)
    old = _lab(worker).cml_lab_id
    lab_call(anon, "post", "/lab/release", active)

    with teardowns_run_inline(execute=True):
        response = acquire(anon, active, topology=OTHER_TOPOLOGY)

    assert response.status_code == 200 and response.json()["reused"] is False
    lab = _lab(worker)
    assert lab.cml_lab_id != old and lab.ref_count == 1
    assert old not in cml.summary()["labs"]  # the old lab is gone from CML
    assert not LabTeardown.objects.exists()


def test_reuse_false_on_an_idle_lab_of_the_same_topology_starts_a_fresh_one(anon, active, worker, cml):
    acquire(anon, active)
    lab_call(anon, "post", "/lab/release", active)

    body = acquire(anon, active, reuse="false").json()

    assert body["reused"] is False
    assert cml.calls["POST import"] == 2
    assert LabTeardown.objects.count() == 1  # the first lab, handed to the teardown job


def test_an_invalid_reuse_value_is_422(anon, active):
    assert "reuse" in assert_problem(acquire(anon, active, reuse="maybe"), 422)["errors"]


CML_REFUSES = b"lab:\n  title: dangling\nnodes: []\nlinks:\n  - {id: l0, n1: n0, n2: n1, i1: i0, i2: i0}\n"


def test_cml_refusing_the_topology_is_422_and_frees_the_slot(anon, active, worker):
    # well formed for the topology policy, refused by CML: a link to a node the lab does not have
    body = assert_problem(acquire(anon, active, topology=CML_REFUSES), 422)

    assert body["detail"].startswith("CML refused the topology")
    lab = _lab(worker)
    assert (lab.status, lab.ref_count) == ("empty", 0)
    assert not LabClaim.objects.exists()


def test_cml_down_is_502_and_leaves_nothing_claimed(anon, active, worker, cml):
    cml.set_faults(down=True)

    assert_problem(acquire(anon, active), 502)

    cml.clear_faults()
    assert (_lab(worker).status, LabClaim.objects.count()) == ("empty", 0)
    assert acquire(anon, active).status_code == 200  # and the next attempt works


# --- POST /lab/release ---------------------------------------------------------------------------------

def test_release_drops_the_claim_and_the_lab_stays_up_idle(anon, active, worker, cml):
    acquire(anon, active)

    response = lab_call(anon, "post", "/lab/release", active)

    assert response.status_code == 204
    lab = _lab(worker)
    assert (lab.status, lab.ref_count) == ("running", 0)
    assert cml.summary()["labs"][lab.cml_lab_id]["state"] == "BOOTED"


def test_release_without_a_claim_changes_nothing(anon, active, worker):
    acquire(anon, active)
    lab_call(anon, "post", "/lab/release", active)

    assert lab_call(anon, "post", "/lab/release", active).status_code == 204
    assert _lab(worker).ref_count == 0


def test_release_when_no_lab_runs_is_404(anon, active):
    assert_problem(lab_call(anon, "post", "/lab/release", active), 404, "No lab running")


def test_release_with_an_unknown_session_is_404(anon, worker):
    assert_problem(lab_call(anon, "post", "/lab/release", "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"), 404,
                   "Session not found")


def test_release_by_a_waiting_session_is_423(anon, waiting):
    assert_problem(lab_call(anon, "post", "/lab/release", waiting), 423, "Session is not active")


# --- DELETE /lab -------------------------------------------------------------------------------------

def test_destroy_with_nothing_running_is_204(anon, active):
    assert lab_call(anon, "delete", "/lab", active).status_code == 204


def test_destroy_forced_by_default_dispatches_the_teardown_202_and_nothing_is_left(
        anon, active, worker, cml, teardowns_run_inline):
    acquire(anon, active)
    lab_id = _lab(worker).cml_lab_id

    with teardowns_run_inline(execute=True):
        response = lab_call(anon, "delete", "/lab", active)

    assert response.status_code == 202
    lab = _lab(worker)
    assert (lab.status, lab.ref_count, lab.cml_lab_id) == ("empty", 0, "")
    assert not LabClaim.objects.exists() and not LabTeardown.objects.exists()
    assert lab_id not in cml.summary()["labs"]
    assert lab_call(anon, "delete", "/lab", active).status_code == 204  # nothing runs any more


def test_destroy_force_false_while_in_use_is_409(anon, active, worker):
    acquire(anon, active)

    body = assert_problem(lab_call(anon, "delete", "/lab?force=false", active), 409, "Lab still in use")

    assert body["ref_count"] == 1
    assert _lab(worker).status == "running"


def test_destroy_force_false_of_an_idle_lab_is_202(anon, active, worker):
    acquire(anon, active)
    lab_call(anon, "post", "/lab/release", active)

    assert lab_call(anon, "delete", "/lab?force=false", active).status_code == 202
    assert LabTeardown.objects.count() == 1  # waits for the q cluster (not running in this test)


def test_destroy_with_an_unknown_session_is_404_and_waiting_is_423(anon, waiting):
    assert_problem(lab_call(anon, "delete", "/lab", "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"), 404)
    assert_problem(lab_call(anon, "delete", "/lab", waiting), 423, "Session is not active")


# --- GET /lab/devices and GET /lab -----------------------------------------------------------------------

def test_devices_lists_the_running_labs_nodes(anon, active):
    acquired = acquire(anon, active).json()

    response = lab_call(anon, "get", "/lab/devices", active)

    assert response.status_code == 200
    assert response.json() == acquired["devices"]


def test_devices_without_a_lab_is_404_unknown_is_404_waiting_is_423(anon, active, waiting):
    assert_problem(lab_call(anon, "get", "/lab/devices", active), 404, "No lab running")
    assert_problem(lab_call(anon, "get", "/lab/devices", "8d4c5a9e-51b4-4bd4-9e38-5b0d1f0f8a11"), 404)
    assert_problem(lab_call(anon, "get", "/lab/devices", waiting), 423)


def test_lab_status_shows_the_slot(anon, active, worker):
    assert lab_call(anon, "get", "/lab", active).json()["status"] == "empty"
    acquire(anon, active)

    body = lab_call(anon, "get", "/lab", active).json()

    assert (body["status"], body["ref_count"], body["worker"]) == ("running", 1, worker.public_id)
    assert len(body["devices"]) == 2


# --- sessions and claims ----------------------------------------------------------------------------------

def test_ending_a_session_drops_only_its_own_claim_and_the_lab_stays(anon, worker, cml):
    placeable_worker(session_pool="default")
    first, second = create(anon)["session_id"], create(anon)["session_id"]  # one per worker
    acquire(anon, first)
    assert acquire(anon, second).status_code == 200  # its own worker, its own lab

    anon.delete(f"{BASE}/session/{first}")

    labs = {lab.worker_id: lab for lab in SessionLab.objects.all()}
    assert sorted(lab.ref_count for lab in labs.values()) == [0, 1]
    assert all(lab.status == "running" for lab in labs.values())
    assert LabClaim.objects.get().session_id.hex == second.replace("-", "")


def test_lab_endpoints_need_the_session_header(anon, worker):
    for method, path in [("post", "/lab/release"), ("delete", "/lab"), ("get", "/lab/devices"), ("get", "/lab")]:
        assert "X-Session-ID" in assert_problem(getattr(anon, method)(f"{BASE}{path}"), 422)["errors"]
