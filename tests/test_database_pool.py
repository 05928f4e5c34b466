"""DATABASE_POOL: the PostgreSQL connection pool is configured for the web server's process, never for
the q cluster (whose workers are forked: a pool's connections must not be shared across fork)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import sys; sys.argv = ['manage.py', sys.argv[1]]; import labmanager.settings as s; "
         "print(s.DATABASE_POOL, s.DATABASES['default'].get('OPTIONS', {}).get('pool'), s.DATABASES['default']['CONN_MAX_AGE'])")


def _settings(command: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_POOL", "DB_CONN_MAX_AGE")}
    environment.update(env, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", PROBE, command], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.strip()


PG = "postgres://postgres@127.0.0.1:5432/unused"


def test_the_pool_is_on_for_the_web_server_when_asked():
    assert _settings("runserver", DATABASE_URL=PG, DATABASE_POOL="true", DB_CONN_MAX_AGE="60") == (
        "True {'min_size': 2, 'max_size': 10, 'timeout': 10.0} 0")


@pytest.mark.parametrize("command, env", [
    ("qcluster", {"DATABASE_URL": PG, "DATABASE_POOL": "true"}),  # forked workers: never a pool
    ("runserver", {"DATABASE_URL": PG}),  # off by default
    ("runserver", {"DATABASE_POOL": "true"}),  # SQLite has no pool
])
def test_the_pool_is_off_for_the_q_cluster_by_default_and_on_sqlite(command, env):
    assert _settings(command, **env).startswith("False None")
