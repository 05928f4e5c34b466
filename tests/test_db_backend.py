"""labmanager.db.postgresql: a kept connection is health-checked by polling its socket, and only a
connection with something waiting there (the server's goodbye) gets Django's `SELECT 1` check, then a
new connection if it is gone. Against the real PostgreSQL: the server ends the connection with
pg_terminate_backend, as a restart does."""

import time

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from labmanager.db.postgresql.base import socket_quiet

pytestmark = [
    pytest.mark.skipif(not django_settings.IS_POSTGRES, reason="the PostgreSQL backend"),
    pytest.mark.django_db(transaction=True),
]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _next_request() -> None:
    """What Django does between two requests on a kept connection (request_finished/request_started)."""
    connection.close_if_unusable_or_obsolete()


@pytest.fixture
def checks(monkeypatch):
    """Counts Django's real health checks (`SELECT 1` on the connection)."""
    calls = []
    wrapper = type(connections["default"])
    real = wrapper.is_usable

    def counted(self):
        calls.append(self.connection)
        return real(self)

    monkeypatch.setattr(wrapper, "is_usable", counted)
    return calls


def test_the_backend_is_ours_and_health_checks_are_on():
    assert connection.settings_dict["ENGINE"] == "labmanager.db.postgresql"
    assert connection.vendor == "postgresql"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_a_quiet_kept_connection_is_used_without_a_round_trip(checks):
    pid = _backend_pid()
    for _ in range(3):
        _next_request()
        assert _backend_pid() == pid
    assert checks == []


def test_a_connection_the_server_ended_is_checked_and_replaced_before_the_next_request_uses_it(checks):
    pid = _backend_pid()
    kept = connection.connection
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while socket_quiet(kept) and time.monotonic() < deadline:  # the server's goodbye is on its way
        time.sleep(0.01)
    assert not socket_quiet(kept)

    _next_request()
    new_pid = _backend_pid()  # no error: the dead connection was found and replaced first

    assert new_pid != pid
    assert checks == [kept]  # Django's own check ran once, on the connection that had something to read
