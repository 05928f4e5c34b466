"""The client distribution (clients/python) installs and runs alone: a virtualenv of its own, with neither
Django nor the server's code, runs the seed's workflow (a pytest suite on the plugin's fixtures, then
examples/scripts/smoke.py) against the production servers (bin/serve all).

The virtualenv is kept under var/client-dist/, keyed by a digest of the client's files: it is built (pip,
from the configured package index) when the client changes, and reused otherwise.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apps.sessions.models import LabStatus, Session, SessionLab, SessionStatus
from tests.daphne import remote_lab_server
from tests.factories import placeable_worker

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
VENVS = ROOT / "var" / "client-dist"
TOPOLOGY = ROOT / "examples" / "topologies" / "two-routers.yaml"
SMOKE = ROOT / "examples" / "scripts" / "smoke.py"
BUILD_LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc")

# The seed's pytest workflow, as a suite of a project that installed only the client: one session for the
# run (remote_lab_client), the marked topology acquired per test and released after it.
SUITE = '''
import pytest

TOPOLOGY = "two-routers.yaml"


@pytest.mark.remote_lab_topology(TOPOLOGY)
def test_the_lab_comes_up(remote_lab, remote_lab_client):
    assert remote_lab_client.status().active
    assert not remote_lab.reused
    names = {device["name"] for device in remote_lab.devices}
    assert names and names == {device["name"] for device in remote_lab_client.devices()}


@pytest.mark.remote_lab_topology(TOPOLOGY)
def test_the_next_test_attaches_to_the_same_lab(remote_lab):
    assert remote_lab.reused
'''

PROBE = '''
import importlib.metadata, importlib.util, sys
for name in ("django", "labmanager", "apps"):
    assert importlib.util.find_spec(name) is None, name
import labmanager_remote_lab, labmanager_remote_lab.pytest_plugin
assert "django" not in sys.modules
plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
print(labmanager_remote_lab.__file__)
print(plugins.get("labmanager_remote_lab.pytest_plugin"))
'''


def _client_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(CLIENT.rglob("*")):
        relative = path.relative_to(CLIENT)
        if path.is_file() and not BUILD_LEFTOVERS("", relative.parts):  # no part of its path is a leftover
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _alone_env(**extra: str) -> dict:
    """The environment without what would reach the server's code: no PYTHONPATH, no Django settings."""
    dropped = ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    env = {name: value for name, value in os.environ.items()
           if name not in dropped and not name.startswith("REMOTE_LAB_")}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


@pytest.fixture(scope="module")
def client_python(tmp_path_factory) -> Path:
    """The python of a virtualenv holding only the client distribution (with its `pytest` extra)."""
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / f"venv-{_client_digest()}"
    with open(VENVS / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, across test runs
        if not (venv / "complete").exists():
            for old in VENVS.glob("venv-*"):
                shutil.rmtree(old)
            # A copy: pip builds in the source tree, which stays clean.
            source = tmp_path_factory.mktemp("client-source") / "python"
            shutil.copytree(CLIENT, source, ignore=BUILD_LEFTOVERS)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                   "--disable-pip-version-check", f"{source}[pytest]"],
                                  env=_alone_env(), capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"pip install of the client failed:\n{done.stdout}\n{done.stderr}"
            (venv / "complete").write_text(_client_digest() + "\n")
    return venv / "bin" / "python"


def test_the_client_installs_without_django_or_the_server(client_python, tmp_path):
    done = subprocess.run([str(client_python), "-c", PROBE], cwd=tmp_path, env=_alone_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    package_file, plugin = done.stdout.split()
    assert Path(package_file).is_relative_to(client_python.parents[1])  # installed, not the repository's copy
    assert plugin == "labmanager_remote_lab.pytest_plugin"


def test_the_server_neither_imports_nor_ships_the_client():
    imports = re.compile(r"^\s*(from|import)\s+labmanager_remote_lab\b", re.MULTILINE)
    server_files = [*ROOT.glob("apps/**/*.py"), *ROOT.glob("labmanager/**/*.py")]
    assert [str(path.relative_to(ROOT)) for path in server_files if imports.search(path.read_text())] == []
    assert "clients" in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.django_db(transaction=True)
def test_the_seed_workflow_runs_from_the_client_alone(client_python, cml_sim, ec2, cml, tmp_path):
    worker = placeable_worker(session_pool="default")
    project = tmp_path / "their-project"  # outside the repository: none of its pytest settings apply
    project.mkdir()
    (project / "test_lab.py").write_text(SUITE)
    shutil.copy(TOPOLOGY, project / "two-routers.yaml")

    with remote_lab_server(cml_sim=cml_sim, storage_dir=tmp_path / "server-files") as url:
        suite = subprocess.run([str(client_python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                f"--remote-lab-url={url}", "--remote-lab-timeout=30"],
                               cwd=project, env=_alone_env(), capture_output=True, text=True, timeout=120)
        assert suite.returncode == 0, suite.stdout + suite.stderr
        assert re.search(r"^2 passed", suite.stdout, re.MULTILINE), suite.stdout

        smoke = subprocess.run([str(client_python), str(SMOKE), "two-routers.yaml"], cwd=project,
                               env=_alone_env(BASE_URL=url, REMOTE_LAB_TIMEOUT="30"),
                               capture_output=True, text=True, timeout=120)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "lab reused: 2 device(s)" in smoke.stdout  # the suite's lab, released and still up

    sessions = Session.objects.all()
    assert len(sessions) == 2 and {session.status for session in sessions} == {SessionStatus.ENDED}
    lab = SessionLab.objects.get(worker=worker)
    assert lab.status == LabStatus.RUNNING and lab.ref_count == 0
