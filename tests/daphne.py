"""The production servers (bin/serve all: nginx, gunicorn, daphne) on 127.0.0.1 serving the remote-lab API
against the test database, its CML the simulator.

The server is another process (tests/events/conftest.py's server_process): it reads its settings from
the environment, so it gets the CML simulator's address and credentials and the session settings that
tests in-process set with pytest-django's `settings`.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.events.conftest import server_process


def remote_lab_env(*, cml_sim, storage_dir: Path) -> dict:
    """Environment variables (labmanager/settings.py) of a server whose workers' CML is `cml_sim`."""
    return {
        "CML_URL_OVERRIDE": cml_sim.url,
        "CML_USERNAME": cml_sim.username,
        "CML_PASSWORD": cml_sim.password,
        "CML_TIMEOUT_SECONDS": "5",
        "SESSION_DEFAULT_POOL": "default",
        "SESSION_ANONYMOUS_NETWORKS": "127.0.0.1/32,::1/128",
        "SESSION_STORAGE_DIR": str(storage_dir),
        "SESSION_LAB_START_TIMEOUT_SECONDS": "30",
        "LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def remote_lab_server(*, cml_sim, storage_dir: Path) -> Iterator[str]:
    """The servers with remote_lab_env, stopped on exit; yields the API root (`http://127.0.0.1:PORT/api/remote-lab`)."""
    with server_process(remote_lab_env(cml_sim=cml_sim, storage_dir=storage_dir)) as url:
        yield url + "/api/remote-lab"
