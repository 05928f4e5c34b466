"""pytest plugin: a remote-lab session for the whole test run, and a lab per test from a marker.

Registered by installing the distribution (entry point ``pytest11``); point it at a server with::

    python -m pytest --remote-lab-url http://127.0.0.1:8000/api/remote-lab

Without a URL the fixtures skip the tests that use them. ``-p no:labmanager_remote_lab.pytest_plugin``
turns the plugin off for a run.

Options (each with an environment variable as fallback):

- ``--remote-lab-url`` / ``REMOTE_LAB_URL``: the API root; without it the fixtures skip their tests.
- ``--remote-lab-api-key`` / ``REMOTE_LAB_API_KEY``: sent as ``X-API-Key``.
- ``--remote-lab-token`` / ``REMOTE_LAB_TOKEN``: sent as ``Authorization: Bearer``.
- ``--remote-lab-timeout`` / ``REMOTE_LAB_TIMEOUT``: seconds to wait for the session to become ACTIVE
  (default 600).

Fixtures:

- ``remote_lab_client`` (session scope): a RemoteLabClient whose session is ACTIVE; heartbeats run in
  the background; the session ends after the last test.
- ``remote_lab`` (function scope): the lab of ``@pytest.mark.remote_lab_topology("topo.yaml", ...)``
  acquired for the test (an AcquiredRemoteLab: ``devices``, ``reused``) and released after it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labmanager_remote_lab.client import RemoteLabClient, RemoteLabError, SessionNotFound

DEFAULT_WAIT_TIMEOUT = 600.0
SKIP_REASON = "remote lab not configured: pass --remote-lab-url or set REMOTE_LAB_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("remote-lab", "remote lab sessions (labmanager-remote-lab)")
    group.addoption("--remote-lab-url", dest="remote_lab_url", default=None, metavar="URL",
                    help="remote-lab API root, e.g. http://127.0.0.1:8000/api/remote-lab (env REMOTE_LAB_URL); "
                         "without it remote-lab tests are skipped")
    group.addoption("--remote-lab-api-key", dest="remote_lab_api_key", default=None, metavar="KEY",
                    help="API key sent as X-API-Key (env REMOTE_LAB_API_KEY)")
    group.addoption("--remote-lab-token", dest="remote_lab_token", default=None, metavar="TOKEN",
                    help="token sent as Authorization: Bearer (env REMOTE_LAB_TOKEN)")
    group.addoption("--remote-lab-timeout", dest="remote_lab_timeout", default=None, type=float,
                    metavar="SECONDS",
                    help=f"seconds to wait for the session to become active (env REMOTE_LAB_TIMEOUT, "
                         f"default {DEFAULT_WAIT_TIMEOUT:g})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "remote_lab_topology(path, *extra_files, reuse=True): the topology the remote_lab fixture acquires "
        "(paths relative to the test file)",
    )


def _setting(config: pytest.Config, name: str, env: str):
    value = config.getoption(name)
    return value if value not in (None, "") else (os.environ.get(env) or None)


def _progress(config: pytest.Config):
    """Progress lines straight to the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def write(message: str) -> None:
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(message)
        else:
            reporter.write_line(message)

    return write


@pytest.fixture(scope="session")
def remote_lab_client(pytestconfig: pytest.Config):
    """A RemoteLabClient with an ACTIVE session for the whole run (skips when no URL is configured)."""
    url = _setting(pytestconfig, "remote_lab_url", "REMOTE_LAB_URL")
    if not url:
        pytest.skip(SKIP_REASON)
    timeout = _setting(pytestconfig, "remote_lab_timeout", "REMOTE_LAB_TIMEOUT")
    timeout = float(timeout) if timeout is not None else DEFAULT_WAIT_TIMEOUT
    client = RemoteLabClient(url, api_key=_setting(pytestconfig, "remote_lab_api_key", "REMOTE_LAB_API_KEY"),
                             token=_setting(pytestconfig, "remote_lab_token", "REMOTE_LAB_TOKEN"))
    try:
        client.start(timeout=timeout, poll_interval=min(2.0, max(timeout / 10, 0.05)),
                     progress=_progress(pytestconfig))
    except RemoteLabError as exc:
        _close_quietly(client)
        pytest.fail(f"remote lab session at {url} not ready: {type(exc).__name__}: {exc}", pytrace=False)
    except BaseException:
        _close_quietly(client)
        raise
    yield client
    client.close()


def _close_quietly(client: RemoteLabClient) -> None:
    try:
        client.close()
    except RemoteLabError:
        pass


def _resolve(path: str | os.PathLike, request: pytest.FixtureRequest) -> Path:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    for base in (request.path.parent, request.config.rootpath, Path.cwd()):
        if (base / candidate).exists():
            return base / candidate
    return request.path.parent / candidate  # acquire() reports the missing file


@pytest.fixture
def remote_lab(remote_lab_client: RemoteLabClient, request: pytest.FixtureRequest):
    """The lab of the test's `remote_lab_topology` marker, acquired for the test and released after."""
    marker = request.node.get_closest_marker("remote_lab_topology")
    if marker is None or not marker.args:
        pytest.fail(f"{request.node.nodeid}: the remote_lab fixture needs "
                    f"@pytest.mark.remote_lab_topology('topology.yaml')", pytrace=False)
    topology, *extra = marker.args
    extra = list(extra) + list(marker.kwargs.get("extra_files", ()))
    lab = remote_lab_client.acquire(_resolve(topology, request),
                                    extra_files=[e if isinstance(e, tuple) else _resolve(e, request)
                                                 for e in extra],
                                    reuse=marker.kwargs.get("reuse", True))
    yield lab
    try:
        remote_lab_client.release()
    except SessionNotFound:
        pass  # the lab was destroyed by the test, or the session is gone: nothing to release
    except RemoteLabError as exc:
        request.node.warn(pytest.PytestWarning(f"remote lab release failed: {exc}"))
