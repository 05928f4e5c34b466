"""The production profile's environment, for subprocesses (manage.py, bin/serve) that must load it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET_KEY = "test-only-production-profile-key-4b1f0c9e2d7a6f5e8c3b1a0d9e8f7a6b5c4d3e2f1a0b"
TEST_AUDIT_CHAIN_KEY = "test-only-audit-chain-key-9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"


def production_env(**extra: str) -> dict:
    """What an operator sets (docs/operations.md#environment), with loopback names for the tests."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="labmanager.settings_production",
        SECRET_KEY=TEST_SECRET_KEY,
        AUDIT_CHAIN_KEY=TEST_AUDIT_CHAIN_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS="https://127.0.0.1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
