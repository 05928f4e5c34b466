"""The production profile refuses to start with a published secret (docs/security.md, "Controls and their
tests"): the development realm's client secrets, the CML simulator's password, `change-me`. The known values are
listed once, in apps/core/known_secrets.py; this file checks the profile refuses them (started as
tests/deploy/test_production_settings.py starts it) and that the list holds every value the repository
publishes."""

import json
import re
from pathlib import Path

import pytest

from apps.core.known_secrets import PUBLISHED_SECRETS
from tests.deploy.conftest import manage, production_env

ROOT = Path(__file__).resolve().parents[2]
OWN = "x7Qm2-own-secret-never-published-Vd81"


@pytest.mark.parametrize(("name", "value"), [
    ("OIDC_CLIENT_SECRET", "labmanager-dashboard-dev-secret"),
    ("OIDC_ADMIN_CLIENT_SECRET", "labmanager-provider-sync-dev-secret"),
    ("OIDC_CLIENT_SECRET", "change-me"),
    ("CML_PASSWORD", "sim-password"),
    ("CML_PASSWORD", "change-me"),
    ("DATABASE_URL", "postgres://labmanager:change-me@127.0.0.1:5432/labmanager"),
    ("SECRET_KEY", "change-me"),
])
def test_the_production_profile_refuses_to_start_with_a_published_secret(name, value):
    done = manage("check", env=production_env(**{name: value}))

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert f"{name} holds a published value" in done.stderr
    password = value.rsplit(":", 1)[-1].split("@")[0] if name == "DATABASE_URL" else value
    assert password not in done.stderr.replace(f"{name} holds", "")  # named, never repeated


def test_the_production_profile_starts_with_secrets_of_its_own():
    env = production_env(OIDC_CLIENT_SECRET=OWN, OIDC_ADMIN_CLIENT_SECRET=OWN + "-2", CML_PASSWORD=OWN + "-3")
    done = manage("check", env=env)

    assert done.returncode == 0, done.stderr


def test_every_secret_the_repository_publishes_is_known():
    realm = json.loads((ROOT / "deploy/keycloak/labmanager-realm.json").read_text())
    client_secrets = {client["secret"] for client in realm["clients"] if client.get("secret")}
    simulator = re.search(r'"--password", default="([^"]+)"', (ROOT / "simulators/cml/__main__.py").read_text())
    run_sh = re.search(r"CML_PASSWORD=(\S+)", (ROOT / "bin/run.sh").read_text())

    assert len(client_secrets) == 3 and client_secrets <= PUBLISHED_SECRETS
    assert simulator and simulator.group(1) in PUBLISHED_SECRETS
    assert run_sh and run_sh.group(1) in PUBLISHED_SECRETS
