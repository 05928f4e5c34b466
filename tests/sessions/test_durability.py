"""Restart durability: the queue lives in the database, not in the server. Sessions, their positions and
their lab claims (and the files of a claim) are made through the production servers (bin/serve all), those
are stopped, and new ones on the same database serve them unchanged and go on from there."""

import hashlib
import uuid

import httpx
import pytest

from apps.sessions.models import LabClaim, Session, SessionLab
from tests.conftest import client_for
from tests.daphne import remote_lab_env
from tests.events.conftest import server_process
from tests.factories import placeable_worker
from tests.sessions.conftest import TOPOLOGY

pytestmark = pytest.mark.django_db(transaction=True)


def _status(http, session_id) -> tuple[str, int]:
    response = http.get(f"/session/{session_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["status"], body["position"]


def test_sessions_positions_and_lab_claims_survive_a_server_restart(cml, cml_sim, tmp_path, instructor_user):
    worker = placeable_worker(session_pool="default")
    env = remote_lab_env(cml_sim=cml_sim, storage_dir=tmp_path / "server-files")
    key = client_for(instructor_user).raw_key

    with server_process(env) as url, httpx.Client(base_url=f"{url}/api/remote-lab", timeout=30) as http:
        active, first, second = (http.post("/session").json()["session_id"] for _ in range(3))
        owned = http.post("/session", headers={"X-API-Key": key}).json()["session_id"]
        acquired = http.post("/lab", headers={"X-Session-ID": active}, files=[
            ("topology", ("two-routers.yaml", TOPOLOGY)), ("extra_files", ("vars.yml", b"a: 1\n"))])
        assert acquired.status_code == 200, acquired.text
        devices = acquired.json()["devices"]
        before = {s: _status(http, s) for s in (active, first, second)}
        assert before == {active: ("active", 0), first: ("waiting", 1), second: ("waiting", 2)}
    lab_id = SessionLab.objects.get(worker=worker).cml_lab_id

    with server_process(env) as url, httpx.Client(base_url=f"{url}/api/remote-lab", timeout=30) as http:
        assert {s: _status(http, s) for s in (active, first, second)} == before
        assert http.get(f"/session/{owned}").status_code == 404  # still tied to its owner: not anonymous
        assert http.get(f"/session/{owned}", headers={"X-API-Key": key}).json()["position"] == 3
        assert http.post("/session/heartbeat", headers={"X-Session-ID": first}).status_code == 204

        lab = http.get("/lab", headers={"X-Session-ID": active}).json()
        assert (lab["status"], lab["ref_count"], lab["cml_lab_id"]) == ("running", 1, lab_id)
        assert lab["topology_sha256"] == hashlib.sha256(TOPOLOGY).hexdigest()
        assert http.get("/lab/devices", headers={"X-Session-ID": active}).json() == devices
        assert (tmp_path / "server-files" / active / "vars.yml").read_bytes() == b"a: 1\n"
        again = http.post("/lab", headers={"X-Session-ID": active}, files={"topology": ("same.yml", TOPOLOGY)})
        assert again.json()["reused"] is True  # the claim it held: no second lab
        assert cml.calls["POST import"] == 1 and list(cml.summary()["labs"]) == [lab_id]

        newcomer = http.post("/session").json()
        assert newcomer["position"] == 4  # behind everyone who was queued before the restart
        assert http.delete(f"/session/{active}").status_code == 204
        assert _status(http, first) == ("active", 0)
        assert [_status(http, s) for s in (second, newcomer["session_id"])] == [("waiting", 1), ("waiting", 3)]
        assert http.delete(f"/session/{uuid.uuid4()}").status_code == 404  # this server is not shutting down

    assert not LabClaim.objects.exists()
    lab = SessionLab.objects.get(worker=worker)
    assert (lab.status, lab.ref_count, lab.cml_lab_id) == ("running", 0, lab_id)  # idle, kept for reuse
    tickets = list(Session.objects.order_by("created_at").values_list("ticket", flat=True))
    assert len(tickets) == 5 and tickets == sorted(set(tickets))  # arrival order, across the restart
