"""The seed's curl walk-through (examples/curl/end_to_end_session.sh) against the production servers (bin/serve
all: nginx, gunicorn, daphne) whose worker's CML is the simulator: it must run unchanged and leave the lab started and the session ended."""

import os
import shutil
import subprocess

import pytest

from apps.sessions.models import LabClaim, LabStatus, Session, SessionLab, SessionStatus
from tests.daphne import remote_lab_server
from tests.events.conftest import ROOT
from tests.factories import placeable_worker
from tests.sessions.conftest import TOPOLOGY_PATH

SCRIPT = ROOT / "examples" / "curl" / "end_to_end_session.sh"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq"),
]


@pytest.fixture
def remote_lab_url(cml_sim, tmp_path):
    with remote_lab_server(cml_sim=cml_sim, storage_dir=tmp_path / "server-files") as url:
        yield url


def _run(base_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "REMOTE_LAB_API_KEY"}
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env={**env, "BASE_URL": base_url, "WAIT_TIMEOUT": "20",
                                                               "POLL_INTERVAL": "0.2"},
                          capture_output=True, text=True, timeout=90)


def test_walkthrough_starts_the_lab_on_cml_and_ends_the_session(ec2, cml, remote_lab_url):
    worker = placeable_worker(session_pool="default")
    assert os.access(SCRIPT, os.X_OK)

    done = _run(remote_lab_url, str(TOPOLOGY_PATH.relative_to(ROOT)))

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert '"reused": false' in done.stdout and '"name": "router1"' in done.stdout, done.stdout
    session = Session.objects.get()
    assert session.status == SessionStatus.ENDED and session.worker_id == worker.pk
    assert str(session.id) in done.stdout
    assert not LabClaim.objects.exists()
    lab = SessionLab.objects.get(worker=worker)  # released: still running, idle, for the next session
    assert lab.status == LabStatus.RUNNING and lab.ref_count == 0
    labs = cml.summary()["labs"]
    assert list(labs) == [lab.cml_lab_id]
    assert labs[lab.cml_lab_id]["state"] == "BOOTED"
    assert set(labs[lab.cml_lab_id]["nodes"]) == {"router1", "router2"}


def test_walkthrough_fails_and_ends_its_session_when_the_lab_cannot_start(ec2, cml, remote_lab_url, tmp_path):
    placeable_worker(session_pool="default")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lab: [this is not a CML topology\n")

    done = _run(remote_lab_url, str(broken))

    assert done.returncode != 0
    assert '"status": 422' in done.stdout, (done.stdout, done.stderr)  # the problem+json body, through jq
    assert Session.objects.get().status == SessionStatus.ENDED  # the exit trap ended it
    assert cml.summary()["labs"] == {}


def test_walkthrough_prints_its_usage_without_a_topology():
    done = _run("http://127.0.0.1:9/api/remote-lab")  # never contacted

    assert done.returncode != 0
    assert "Usage:" in done.stderr
