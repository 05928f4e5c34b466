"""Shared fixtures: users per role, API clients authenticated with real API keys."""

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.identity.services import api_key_create, user_ensure_with_role


def pytest_configure(config):
    """The SQLite test database's folder (var/ by default): importing the settings creates no directory."""
    test_name = django_settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if test_name:
        Path(test_name).parent.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session", autouse=True)
def ec2_sim():
    """moto's EC2 server (behind the fault proxy) on 127.0.0.1, for the whole run; boto3 points at it."""
    from simulators.ec2 import Ec2Simulator

    sim = Ec2Simulator().start()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-west-2"}.items():
        os.environ[name] = value
    overrides = {"AWS_ENDPOINT_URL": sim.url, "WORKER_AMI_ID": "ami-12c6146b", "EC2_MAX_ATTEMPTS": 2,
                 "EC2_TIMEOUT_SECONDS": 2.0, "AWS_REGION": "us-west-2"}
    saved = {name: getattr(django_settings, name) for name in overrides}
    for name, value in overrides.items():
        setattr(django_settings, name, value)
    _warm_up_moto(sim.url)
    yield sim
    for name, value in saved.items():
        setattr(django_settings, name, value)
    sim.stop()


def _warm_up_moto(url: str) -> None:
    """moto builds its AMI and instance-type catalogues on the first EC2 call (seconds on a busy machine);
    pay that here, with a patient client, not in the first test (whose gateway timeout is 2 s)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("ec2", region_name="us-west-2", endpoint_url=url,
                          config=Config(read_timeout=120, retries={"max_attempts": 1}))
    reservation = client.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro")
    client.terminate_instances(InstanceIds=[i["InstanceId"] for i in reservation["Instances"]])


@pytest.fixture
def ec2(ec2_sim):
    """A clean EC2: no instances, no faults (for tests that count or sync instances)."""
    from tests.factories import forget_instance_pool

    ec2_sim.reset()
    forget_instance_pool()
    yield ec2_sim
    ec2_sim.disarm()


@pytest.fixture
def tasks_inline(monkeypatch):
    """django-q2 runs what a request enqueues in this process, at once (Q_CLUSTER sync is read at import:
    patch Conf): a request that awaits its task finds the task's row at its first look."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def no_cluster(monkeypatch):
    """django-q2's async_task enqueues (the ORM broker) and nothing runs the tasks until the test does
    (tests/awaited_support.py's run_queued): for tests of requests that await a task."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture(scope="session", autouse=True)
def cml_sim():
    """One CML controller simulator on 127.0.0.1 serving every worker (CML_URL_OVERRIDE), nodes boot at once.
    Autouse: no test may ever reach for a worker's own (simulated EC2, so not ours) address.
    The simulator speaks plain http on loopback: CML_ALLOW_HTTP is on here and in the environment the test
    servers and children inherit (production refuses http; tests/workers/test_cml_tls.py checks both)."""
    from simulators.cml import CmlSimulator

    sim = CmlSimulator(boot_delay=0.0, max_nodes=20)
    sim.start()
    os.environ["CML_ALLOW_HTTP"] = "true"
    overrides = {"CML_URL_OVERRIDE": sim.url, "CML_USERNAME": "admin", "CML_PASSWORD": "sim-password",
                 "CML_TIMEOUT_SECONDS": 2.0, "CML_ALLOW_HTTP": True,
                 "CONSOLE_HOST": "127.0.0.1"}  # console entries name the simulator's PATty listeners
    saved = {name: getattr(django_settings, name) for name in overrides}
    for name, value in overrides.items():
        setattr(django_settings, name, value)
    yield sim
    for name, value in saved.items():
        setattr(django_settings, name, value)
    sim.stop()


@pytest.fixture
def cml(cml_sim):
    """The CML simulator, reset: no labs, no faults, licensed."""
    cml_sim.reset()
    yield cml_sim
    cml_sim.clear_faults()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Every role user gets a password; the default PBKDF2 costs ~0.3 s a user on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    # Rate-limit counters live in the cache (Redis on the CI's second run): start each test clean.
    cache.clear()
    yield


def _user(username, role):
    user, _ = user_ensure_with_role(username=username, role=role, actor="tests", password="pw-" + username)
    return user


@pytest.fixture
def admin_user(db):
    return _user("admin1", "admin")


@pytest.fixture
def operator_user(db):
    return _user("operator1", "operator")


@pytest.fixture
def instructor_user(db):
    return _user("instructor1", "instructor")


@pytest.fixture
def other_instructor(db):
    return _user("instructor2", "instructor")


def client_for(user) -> APIClient:
    """An APIClient that sends a real API key of `user` in X-API-Key."""
    _, raw = api_key_create(user=user, actor="tests")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    client.raw_key = raw
    return client


@pytest.fixture
def admin_client(admin_user):
    return client_for(admin_user)


@pytest.fixture
def operator_client(operator_user):
    return client_for(operator_user)


@pytest.fixture
def instructor_client(instructor_user):
    return client_for(instructor_user)


@pytest.fixture
def other_instructor_client(other_instructor):
    return client_for(other_instructor)


@pytest.fixture
def anon_client():
    return APIClient()
