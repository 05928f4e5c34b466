"""`make run` survives its own restart: bin/run.sh, as `make run` starts it (after migrate and setup_schedules),
on its own SQLite file, simulators' state directory and loopback ports; stopped with SIGINT to its process group
(what Ctrl-C does), started again, and compared. The simulators keep their state in SIM_STATE_DIR (var/sim
under `make run`), so the restart finds the same EC2 instances and CML labs: the same workers, no worker
terminated and replaced, the lablet instances on the same labs, the labs still there and booted.

One test, the whole stack twice (about 55 s on a quiet machine, most of it Django starting in each process
bin/run.sh starts): the restart is what is under test, and only the real start script shows what seed_demo
and the EC2 sync do to a fleet the simulators remember or forget."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The stack under test always runs on its own SQLite file (what `make run` uses): the suite's PostgreSQL pass
# (CI runs the suite twice) would only repeat it.
pytestmark = pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                reason="make run's own SQLite stack: run once, in the SQLite pass")
UP_LINE = "LabManager is up at"
# What bin/run.sh reads from the environment to decide on simulators and databases: the test's own values
# (the suite's simulators, PostgreSQL, Redis) must not leak into the stack under test.
DROPPED_PREFIXES = ("AWS_", "CML_", "DATABASE_", "REDIS_", "SQLITE_", "DJANGO_", "Q_")
KEPT = {"AWS_CA_BUNDLE"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k in KEPT or not k.startswith(DROPPED_PREFIXES)}
    env.pop("WORKER_AMI_ID", None)
    env.pop("CONSOLE_HOST", None)
    env.update(
        DEBUG="true", PYTHONPATH=str(ROOT), SQLITE_PATH=str(tmp_path / "labmanager.sqlite3"),
        SIM_STATE_DIR=str(tmp_path / "sim"), SESSION_STORAGE_DIR=str(tmp_path / "sessions"),
        PROXY_RUN_DIR=str(tmp_path / "nginx"), HOST="127.0.0.1", PORT=str(_free_port()),
        WEB_PORT=str(_free_port()), ASGI_PORT=str(_free_port()), EC2_SIM_PORT=str(_free_port()),
        CML_SIM_PORT=str(_free_port()), CML_SIM_BOOT_DELAY="0",
        WEB_PROCESSES="1", DJANGO_SETTINGS_MODULE="labmanager.settings",
        STOP_GRACE="5",  # then KILL: the simulators have written their state after each change already
        PROXY_PROCESSES="1", Q_WORKERS="1",
    )
    return env


def _prepare(env: dict) -> None:
    """What `make run` does before bin/run.sh: migrate, setup_schedules (collectstatic: the test reads no
    static file). One process: one Django start-up fewer."""
    code = ("import django; django.setup(); from django.core.management import call_command; "
            "call_command('migrate', interactive=False, verbosity=0); call_command('setup_schedules')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def _run_sh(env: dict, log: Path):
    """bin/run.sh until it says it is up; on leaving, Ctrl-C (SIGINT to its process group) and a bounded wait
    for every process of the group to end."""
    with open(log, "wb") as out:
        process = subprocess.Popen([str(ROOT / "bin/run.sh")], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while UP_LINE not in log.read_text(errors="replace"):
            assert process.poll() is None, f"bin/run.sh ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"bin/run.sh not up in 90 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield process
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=40)
        deadline = time.monotonic() + 10
        while _group_alive(process.pid):  # nothing of the stack may outlive it (a daphne holding its port)
            assert time.monotonic() < deadline, f"processes of bin/run.sh left running:\n{_group(process.pid)}"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _group(pgid: int) -> str:
    out = subprocess.run(["ps", "-o", "pid,cmd", "-g", str(pgid)], capture_output=True, text=True)
    return out.stdout


def _fleet(env: dict) -> dict:
    """What the dashboard shows, from the database, and what the simulators hold."""
    with contextlib.closing(sqlite3.connect(env["SQLITE_PATH"], timeout=10)) as db:
        workers = db.execute("SELECT public_id, name, status, aws_instance_id, ip_address, private_ip_address "
                             "FROM workers_worker ORDER BY id").fetchall()
        instances = db.execute("SELECT i.public_id, i.owner_id, i.status, w.public_id, i.cml_lab_id "
                               "FROM lablets_labletinstance i LEFT JOIN workers_worker w ON w.id = i.worker_id "
                               "ORDER BY i.id").fetchall()
    cml_url = f"http://127.0.0.1:{env['CML_SIM_PORT']}"
    with urllib.request.urlopen(cml_url + "/_sim/state", timeout=10) as response:
        labs = {lab_id: lab["state"] for lab_id, lab in json.load(response)["labs"].items()}
    return {"workers": workers, "instances": instances, "labs": labs}


def test_a_restart_of_make_run_keeps_the_fleet_and_the_labs(tmp_path):
    env = _environment(tmp_path)
    _prepare(env)

    with _run_sh(env, tmp_path / "first.log"):
        before = _fleet(env)
    with _run_sh(env, tmp_path / "second.log"):
        after = _fleet(env)

    assert after["workers"] == before["workers"]  # same ids, EC2 instances, states and addresses
    assert [w[2] for w in before["workers"]] == ["running", "running", "stopped"]  # the demo fleet, seeded once
    assert after["instances"] == before["instances"]  # same lablet instances, states, workers and labs
    with_lab = {row[4] for row in before["instances"] if row[4]}
    assert len(with_lab) == 2  # student-001 and -002 have their labs on CML
    assert after["labs"] == before["labs"]  # still there, booted
    assert with_lab <= set(after["labs"]) and {after["labs"][lab] for lab in with_lab} == {"BOOTED"}
    assert (tmp_path / "sim" / "ec2.pickle").exists() and (tmp_path / "sim" / "cml.json").exists()
