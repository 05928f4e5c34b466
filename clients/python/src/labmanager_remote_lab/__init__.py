"""Python client of LabManager's remote-lab session API (`/api/remote-lab`) and its pytest plugin.

Installing the distribution (`labmanager-remote-lab`) registers the pytest plugin
(`labmanager_remote_lab.pytest_plugin`, entry point `pytest11`); its fixtures skip their tests until a
server is configured (`--remote-lab-url` or `REMOTE_LAB_URL`). Nothing here imports Django.
"""

from labmanager_remote_lab.client import (
    AcquiredRemoteLab,
    ClientClosed,
    CreatedSession,
    LabConflict,
    RemoteAuthenticationFailed,
    RemoteLabClient,
    RemoteLabConnectionError,
    RemoteLabError,
    RemoteQueueFull,
    RemoteSessionStatus,
    SessionLocked,
    SessionNotFound,
    WaitTimeout,
)

__all__ = [
    "AcquiredRemoteLab",
    "ClientClosed",
    "CreatedSession",
    "LabConflict",
    "RemoteAuthenticationFailed",
    "RemoteLabClient",
    "RemoteLabConnectionError",
    "RemoteLabError",
    "RemoteQueueFull",
    "RemoteSessionStatus",
    "SessionLocked",
    "SessionNotFound",
    "WaitTimeout",
]
