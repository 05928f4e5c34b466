"""The process is shutting down: the seed's DELETE /session/{id} then answers 204 even for an unknown id,
so clients that clean up while the server stops do not fail.

The flag is process memory on purpose (it describes this process, not the queue). gunicorn, which serves
DELETE /session/{id}, sets it when a worker gets SIGTERM and finishes its requests
(deploy/gunicorn.conf.py, post_worker_init).
"""

import logging
import threading

log = logging.getLogger(__name__)
_shutting_down = threading.Event()


def begin_shutdown(*_args) -> None:
    if not _shutting_down.is_set():
        log.info("Shutting down: DELETE /session/{id} of unknown sessions now answers 204")
    _shutting_down.set()


def is_shutting_down() -> bool:
    return _shutting_down.is_set()


def reset() -> None:
    """For tests."""
    _shutting_down.clear()
