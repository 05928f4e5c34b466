"""Operational commands: create_api_key, setup_schedules, seed_demo."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django_q.models import Schedule
from rest_framework.test import APIClient

from apps.lablets.models import LabletDefinition, LabletInstance
from apps.workers.models import Worker

pytestmark = pytest.mark.django_db
User = get_user_model()



def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- create_api_key ----------------------------------------------------------


def test_create_api_key_prints_only_the_key_and_the_key_works_at_once():
    out, _ = run("create_api_key", "--user", "ci-bot", "--role", "operator")

    lines = out.splitlines()
    assert len(lines) == 1
    key = lines[0]
    assert key.startswith("lm_") and key == key.strip()
    user = User.objects.get(username="ci-bot")
    assert list(user.groups.values_list("name", flat=True)) == ["operator"]
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    assert client.get("/api/workers").status_code == 200
    assert client.post("/api/workers", {"name": "from-ci"}, format="json").status_code == 201


def test_create_api_key_for_an_existing_user_adds_a_second_working_key():
    first, _ = run("create_api_key", "--user", "ci-bot", "--role", "instructor")
    second, err = run("create_api_key", "--user", "ci-bot", "--role", "instructor")

    assert first.strip() != second.strip()
    assert err == ""  # "Created user" is said once, on stderr, the first time only
    assert User.objects.filter(username="ci-bot").count() == 1
    for key in (first.strip(), second.strip()):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.get("/api/lablet-instances").status_code == 200


def test_create_api_key_refuses_an_unknown_role():
    with pytest.raises(CommandError, match="role"):
        run("create_api_key", "--user", "ci-bot", "--role", "superhero")

    assert not User.objects.filter(username="ci-bot").exists()


# --- setup_schedules ---------------------------------------------------------


def _schedules() -> dict:
    return {row["name"]: row for row in Schedule.objects.order_by("name").values()}


def test_setup_schedules_creates_the_declared_schedules(settings):
    run("setup_schedules")

    schedules = _schedules()
    assert set(schedules) == {f"labmanager:{name}" for name in settings.Q_SCHEDULES}
    for name, spec in settings.Q_SCHEDULES.items():
        row = schedules[f"labmanager:{name}"]
        assert (row["func"], row["schedule_type"], row["repeats"]) == (spec["func"], spec["schedule_type"], -1)


def test_setup_schedules_run_twice_changes_nothing():
    run("setup_schedules")
    before = _schedules()

    out, _ = run("setup_schedules")

    assert _schedules() == before
    assert "0 created, 0 updated, 0 deleted" in out


def test_setup_schedules_updates_a_changed_declaration_and_deletes_a_removed_one(settings):
    settings.Q_SCHEDULES = {
        "purge_idempotency_keys": {"func": "apps.api.tasks.purge_idempotency_keys", "schedule_type": "H"},
        "nightly_report": {"func": "apps.api.tasks.purge_idempotency_keys", "schedule_type": "D"},
    }
    run("setup_schedules")
    nightly_pk = Schedule.objects.get(name="labmanager:nightly_report").pk

    settings.Q_SCHEDULES = {
        "nightly_report": {"func": "apps.api.tasks.purge_idempotency_keys", "schedule_type": "I", "minutes": 15},
    }
    out, _ = run("setup_schedules")

    assert "0 created, 1 updated, 1 deleted" in out
    schedules = _schedules()
    assert set(schedules) == {"labmanager:nightly_report"}
    nightly = schedules["labmanager:nightly_report"]
    assert (nightly["id"], nightly["schedule_type"], nightly["minutes"]) == (nightly_pk, "I", 15)


def test_setup_schedules_leaves_schedules_it_does_not_manage_alone(settings):
    manual = Schedule.objects.create(name="someone-elses-job", func="math.floor", args="1.5", schedule_type="D")
    settings.Q_SCHEDULES = {}

    run("setup_schedules")

    assert list(Schedule.objects.values_list("name", flat=True)) == ["someone-elses-job"]
    manual.refresh_from_db()
    assert (manual.func, manual.schedule_type, manual.args) == ("math.floor", "D", "1.5")


# --- seed_demo ---------------------------------------------------------------


@pytest.fixture
def debug(settings):
    settings.DEBUG = True  # the embedded default (make run); pytest-django turns DEBUG off
    return settings


def test_seed_demo_refuses_outside_debug_and_creates_nothing(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        run("seed_demo")

    assert not User.objects.filter(username__in=["admin", "operator", "instructor"]).exists()
    assert not Client().login(username="admin", password="admin-demo-pass")
    assert not Worker.objects.exists() and not LabletDefinition.objects.exists()


def test_seed_demo_seeds_outside_debug_when_forced(settings):
    settings.DEBUG = False

    out, _ = run("seed_demo", "--force")

    assert "admin-demo-pass" in out
    assert Client().login(username="admin", password="admin-demo-pass")


def _counts() -> dict:
    return {
        "users": User.objects.count(),
        "workers": Worker.objects.count(),
        "definitions": LabletDefinition.objects.count(),
        "instances": LabletInstance.objects.count(),
    }


def test_seed_demo_twice_creates_no_duplicates(debug):
    run("seed_demo")
    first = _counts()

    run("seed_demo")

    assert _counts() == first
    assert all(first.values())


def test_seed_demo_again_leaves_the_workers_as_they_are(debug):
    """`make run` seeds on every start: a demo worker started since keeps running."""
    from apps.workers import services as workers

    run("seed_demo")
    third = Worker.objects.get(name="cml-worker-demo-03")
    workers.worker_start(worker=third, actor="tests")
    before = sorted(Worker.objects.values_list("public_id", "status"))
    assert ("running" in dict(before).values()) and Worker.objects.get(pk=third.pk).status == "running"

    run("seed_demo")

    assert sorted(Worker.objects.values_list("public_id", "status")) == before


def test_seed_demo_gives_the_demo_definitions_to_the_demo_instructor(debug):
    run("seed_demo")

    owners = set(LabletDefinition.objects.values_list("owner__username", flat=True))
    assert owners == {"instructor"}  # who signs in as `instructor` may change them (docs/security.md)


def test_seed_demo_leaves_instances_in_several_states(debug):
    run("seed_demo")

    states = set(LabletInstance.objects.values_list("status", flat=True))
    assert len(states) >= 4
    assert {"pending", "running", "terminated"} <= states
    assert set(Worker.objects.values_list("status", flat=True)) == {"running", "stopped"}


def test_seed_demo_users_log_in_with_the_printed_passwords(debug):
    run("seed_demo")
    out, _ = run("seed_demo")  # the passwords printed by a re-run still work

    credentials = re.findall(r"^\s+(\S+)\s+/\s+(\S+)\s+role: (\w+)$", out, re.MULTILINE)
    assert {role for _, _, role in credentials} == {"admin", "operator", "instructor"}
    for username, password, role in credentials:
        assert Client().login(username=username, password=password), username
        assert User.objects.get(username=username).groups.filter(name=role).exists()


def test_seed_demo_gives_the_default_session_pool_a_usable_worker(debug, settings):
    """So the curl walk-through and the remote-lab client work against `make run` at once."""
    from apps.workers.selectors import worker_placeable_list

    run("seed_demo")

    pool_workers = worker_placeable_list().filter(session_pool=settings.SESSION_DEFAULT_POOL)
    assert list(pool_workers.values_list("name", flat=True)) == ["cml-worker-demo-02"]
