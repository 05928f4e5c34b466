"""Helpers shared by the benchmark scripts (run as `python bench/<name>.py`, so this imports as `common`)."""

import os
import socket
from pathlib import Path

HOST = "127.0.0.1"
PG_DSN = f"host={HOST} port=5432 user=postgres dbname=postgres"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def pg_available() -> bool:
    """Whether the PostgreSQL on 127.0.0.1:5432 answers (the benches fall back to SQLite when not)."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


def pg_admin(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the maintenance database, outside a transaction."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show whether a server was saturated."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")
