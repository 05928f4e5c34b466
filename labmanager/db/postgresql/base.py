"""Django's PostgreSQL backend with a health check that costs no round trip while the connection is quiet.

With CONN_HEALTH_CHECKS, Django checks a kept connection before each request uses it by running
`SELECT 1`: one more round trip per request, ~15 % of a heartbeat's time (docs/performance.md). A
connection that the server closed (a restart, pg_terminate_backend, idle_session_timeout) has the
server's goodbye or its end-of-file waiting on the socket; a healthy idle one has nothing. So the socket
is polled first, without waiting: quiet means healthy, and only a readable socket gets Django's real
check (`SELECT 1`, then a new connection if that fails). What this cannot see, a peer that vanished
without a word (a cut cable), the `SELECT 1` would not have seen either until TCP gave up.
"""

import select

from django.db.backends.postgresql import base


def socket_quiet(connection) -> bool:
    """True if nothing is waiting to be read on the connection's socket (a poll, no waiting)."""
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError):  # closed, or no socket any more
        return False
    return not readable


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self):
        if (self.connection is not None and self.health_check_enabled and not self.health_check_done
                and not self.connection.closed and socket_quiet(self.connection)):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
