"""The pytest plugin (labmanager_remote_lab.pytest_plugin), run in inner pytest sessions via pytester
against the in-process fake remote-lab API. The inner sessions load it as users get it: through the
distribution's pytest11 entry point (`make setup` installs clients/python into .venv)."""

import pytest

pytest_plugins = ["pytester"]

INNER_ARGS = ("-p", "no:django", "-p", "no:cacheprovider")

USES_CLIENT = """
seen = []

def test_one(remote_lab_client):
    status = remote_lab_client.status()
    assert status.active and status.position == 0
    assert remote_lab_client.heartbeat_running
    seen.append(remote_lab_client.session_id)

def test_two(remote_lab_client):
    assert seen == [remote_lab_client.session_id]  # session scope: one session for the run
"""


@pytest.fixture(autouse=True)
def _no_remote_lab_env(monkeypatch):
    for name in ("REMOTE_LAB_URL", "REMOTE_LAB_API_KEY", "REMOTE_LAB_TOKEN", "REMOTE_LAB_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def run(pytester, *args):
    return pytester.runpytest_inprocess(*INNER_ARGS, "-rs", *args)


def test_client_fixture_holds_one_active_session_for_the_run(pytester, fake_server):
    pytester.makepyfile(USES_CLIENT)
    result = run(pytester, f"--remote-lab-url={fake_server.url}", "--remote-lab-api-key=k-1")
    result.assert_outcomes(passed=2)
    created = fake_server.requests_to("POST", "/session")
    assert len(created) == 1 and created[0]["X-API-Key"] == "k-1"
    assert fake_server.queue == []  # closed at the end of the run
    assert len([p for m, p, _ in fake_server.requests if m == "DELETE" and p.startswith("/session/")]) == 1


def test_settings_from_the_environment(pytester, fake_server, monkeypatch):
    monkeypatch.setenv("REMOTE_LAB_URL", fake_server.url)
    monkeypatch.setenv("REMOTE_LAB_TOKEN", "t-9")
    pytester.makepyfile(USES_CLIENT)
    run(pytester).assert_outcomes(passed=2)
    assert fake_server.requests_to("POST", "/session")[0]["Authorization"] == "Bearer t-9"


def test_without_url_the_tests_are_skipped_with_a_reason(pytester):
    pytester.makepyfile(USES_CLIENT)
    result = run(pytester)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*remote lab not configured: pass --remote-lab-url or set REMOTE_LAB_URL*"])


def test_waiting_shows_progress_on_the_terminal(pytester, fake_server):
    fake_server.add_session()  # someone else holds the worker
    fake_server.auto_advance_after = 3
    pytester.makepyfile(USES_CLIENT)
    result = run(pytester, f"--remote-lab-url={fake_server.url}", "--remote-lab-timeout=1")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["remote-lab: session * waiting, position 1, estimated wait ~1m 30s",
                                 "remote-lab: session * is active"])


def test_wait_timeout_is_an_error(pytester, fake_server):
    fake_server.add_session()
    pytester.makepyfile(USES_CLIENT)
    result = run(pytester, f"--remote-lab-url={fake_server.url}", "--remote-lab-timeout=0.2")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*WaitTimeout*not active after 0.2s*"])
    assert len(fake_server.queue) == 1  # our waiting session was ended


def test_remote_lab_fixture_acquires_the_marked_topology(pytester, fake_server):
    pytester.makefile(".yaml", topo="lab:\n  title: t\nnodes: []\nlinks: []\n")
    pytester.makefile(".yml", vars="x: 1\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.remote_lab_topology("topo.yaml", "vars.yml")
        def test_first(remote_lab):
            assert not remote_lab.reused
            assert [d["name"] for d in remote_lab.devices] == ["r1", "r2"]

        @pytest.mark.remote_lab_topology("topo.yaml")
        def test_second(remote_lab):
            assert remote_lab.reused  # released by test_first, still up: attached again

        def test_unmarked(remote_lab):
            pass
    """)
    result = run(pytester, f"--remote-lab-url={fake_server.url}")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*the remote_lab fixture needs @pytest.mark.remote_lab_topology*"])
    assert [[f["filename"] for f in u["extra_files"]] for u in fake_server.uploads[:1]] == [["vars.yml"]]
    assert len(fake_server.requests_to("POST", "/lab/release")) == 2
    assert fake_server.lab["refs"] == set()
