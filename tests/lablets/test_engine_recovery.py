"""kill -9 in the middle of a lifecycle step: the next tick reconciles the database with CML.

A real separate process (a small Django script against this test run's database: the SQLite file, or
the PostgreSQL test database) runs one step over HTTP to the CML simulator, which is made slow so the
process is inside a CML request when it gets SIGKILL. The simulator still finishes that request (CML
would too): a lab appears that the dead process never recorded. The tick, run here once the dead
process's claim has run out, must bring the instance to the right state and leave no orphan lab.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from apps.lablets.engine import lifecycle_tick
from apps.lablets.models import ConsolePort
from simulators.cml.server import _Handler
from tests.lablets.engine_support import (
    events,
    fresh,
    labs,
    labs_titled,
    running_worker,
    s3_keys,
    scheduled,
    two_router_definition,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # the other process must see committed rows

ROOT = Path(__file__).resolve().parents[2]
LEASE = 60.0  # the child's claims; the tick is told the time they run out (lifecycle_tick(now=...))
SLOW = 0.3  # seconds the simulator waits before answering each request
SCRIPT = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
import django
django.setup()
from apps.lablets.engine import instance_advance, instance_terminate
from apps.lablets.models import LabletInstance
pk = int(sys.argv[2])
print("ready", flush=True)
if sys.argv[1] == "advance":
    print(instance_advance(instance_pk=pk), flush=True)
else:
    print(instance_terminate(instance=LabletInstance.objects.get(pk=pk), actor="child").status, flush=True)
"""


def child_env(cml) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH")}
    name = connection.settings_dict["NAME"]
    if connection.vendor == "postgresql":
        parts = urlsplit(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
    else:
        env["SQLITE_PATH"] = str(name)
    env.update({
        "CML_URL_OVERRIDE": cml.url, "CML_USERNAME": "admin", "CML_PASSWORD": "sim-password",
        "AWS_ENDPOINT_URL": settings.AWS_ENDPOINT_URL, "AWS_REGION": settings.AWS_REGION,
        "LIFECYCLE_STEP_LEASE_SECONDS": str(LEASE), "PYTHONPATH": str(ROOT),
    })
    return env


def start_child(cml, verb: str, pk: int) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, verb, str(pk)], cwd=ROOT, env=child_env(cml),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def wait_for(condition, timeout=30.0, what="condition"):
    wait_until(condition, timeout=timeout, what=what)


def a_request_sleeps_in_the_simulator() -> bool:
    """A handler thread of the CML simulator is in its `slow` fault's wait (Event.wait called by _handle)."""
    handle = _Handler._handle.__code__
    for frame in sys._current_frames().values():
        callee = None
        while frame is not None:
            if frame.f_code is handle:
                if callee is not None and callee.f_code.co_name == "wait":
                    return True
                break
            callee, frame = frame, frame.f_back
    return False


def kill_inside_request(child, cml, logins_before: int, logins: int) -> None:
    """SIGKILL the child while the request after its `logins`-th CML login waits in the slow simulator."""
    wait_for(lambda: cml.calls["GET authentication"] >= logins_before + logins or child.poll() is not None,
             what="the child's CML login")
    # The simulator counts a call once its slow wait is over: the login counted, the child's next request
    # (it sends one at a time) is the one found sleeping there.
    wait_for(lambda: a_request_sleeps_in_the_simulator() or child.poll() is not None,
             what="the child's next request to wait in the slow simulator")
    assert child.poll() is None, f"the child finished before the kill: {child.communicate()}"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    child.stdout.close()
    child.stderr.close()


@pytest.fixture
def worker(cml):
    return running_worker()


@pytest.fixture
def definition():
    return two_router_definition(idle_timeout_minutes=240)


def test_a_process_killed_during_the_import_leaves_a_lab_the_tick_adopts(worker, definition, cml):
    instance = scheduled(worker, definition)
    cml.set_faults(slow=SLOW)
    child = start_child(cml, "advance", instance.pk)

    kill_inside_request(child, cml, cml.calls["GET authentication"], 1)  # login, then POST import

    wait_for(lambda: len(labs_titled(cml, instance.public_id)) == 1, what="the import to land on CML")
    orphan = labs_titled(cml, instance.public_id)[0]
    stuck = fresh(instance)
    assert stuck.status == "instantiating"
    assert stuck.cml_lab_id == ""  # the dead process never recorded it
    assert stuck.claimed_until is not None
    cml.clear_faults()

    lifecycle_tick(now=stuck.claimed_until)  # the tick once the dead process's claim has run out


    instance = fresh(instance)
    assert instance.status == "running", (instance.lifecycle_step, instance.last_error)
    assert instance.cml_lab_id == orphan
    assert labs_titled(cml, instance.public_id) == [orphan]
    assert list(labs(cml)) == [orphan]
    assert "lablet_instance.lab_adopted" in events(instance)
    assert [c["port"] for c in instance.console] == [9000, 9001]
    assert ConsolePort.objects.filter(instance=instance).count() == 2


# The teardown logs in to CML to stop the lab (1), to export it (2), to look for labs by title (3) and to
# delete them (4): the kill lands in the stop, the export or the delete.
@pytest.mark.parametrize("logins,left_in", [(1, "stopping"), (2, "stopped"), (4, "archived")])
def test_a_process_killed_during_the_teardown_is_finished_by_the_tick(worker, definition, cml, logins, left_in):
    instance = scheduled(worker, definition)
    lifecycle_tick()
    assert fresh(instance).status == "running"
    cml.set_faults(slow=SLOW)
    logins_before = cml.calls["GET authentication"]
    child = start_child(cml, "terminate", instance.pk)

    kill_inside_request(child, cml, logins_before, logins)

    stuck = fresh(instance)
    assert stuck.status == left_in
    assert stuck.claimed_until is not None
    cml.clear_faults()

    lifecycle_tick(now=stuck.claimed_until)  # the tick once the dead process's claim has run out

    instance = fresh(instance)
    assert instance.status == "terminated", (instance.lifecycle_step, instance.last_error)
    assert instance.termination_reason == "terminate requested"
    assert labs(cml) == {}
    assert instance.cml_lab_removed_at is not None
    assert not ConsolePort.objects.filter(instance=instance).exists()
    assert f"{instance.archive_key}lab.yaml" in s3_keys(instance.archive_key)
