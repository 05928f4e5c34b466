"""Python client of the remote-lab session API (`/api/remote-lab`) and its pytest plugin.

The plugin (`labmanager.remote_lab.pytest_plugin`) is not registered automatically: enable it with
`pytest -p labmanager.remote_lab.pytest_plugin` or `pytest_plugins = ["labmanager.remote_lab.pytest_plugin"]`.
See docs/remote-lab.md.
"""

from labmanager.remote_lab.client import (
    AcquiredLab,
    AuthenticationFailed,
    ClientClosed,
    CreatedSession,
    LabConflict,
    QueueFull,
    RemoteLabClient,
    RemoteLabConnectionError,
    RemoteLabError,
    SessionLocked,
    SessionNotFound,
    SessionStatus,
    WaitTimeout,
)

__all__ = [
    "AcquiredLab",
    "AuthenticationFailed",
    "ClientClosed",
    "CreatedSession",
    "LabConflict",
    "QueueFull",
    "RemoteLabClient",
    "RemoteLabConnectionError",
    "RemoteLabError",
    "SessionLocked",
    "SessionNotFound",
    "SessionStatus",
    "WaitTimeout",
]
