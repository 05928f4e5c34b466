"""The process is shutting down: the seed's DELETE /session/{id} then answers 204 even for an unknown id,
so clients that clean up while the server stops do not fail.

The flag is process memory on purpose (it describes this process, not the queue). It is set by
`begin_shutdown()`, which AppConfig.ready() hooks into the server's shutdown: under daphne (Twisted) a
"before shutdown" reactor trigger, run on SIGINT/SIGTERM before connections close; the ASGI lifespan
protocol is not used because Channels' ProtocolTypeRouter has no lifespan handler.
"""

import logging
import sys
import threading

log = logging.getLogger(__name__)
_shutting_down = threading.Event()
_hooked = False


def begin_shutdown(*_args) -> None:
    if not _shutting_down.is_set():
        log.info("Shutting down: DELETE /session/{id} of unknown sessions now answers 204")
    _shutting_down.set()


def is_shutting_down() -> bool:
    return _shutting_down.is_set()


def reset() -> None:
    """For tests."""
    _shutting_down.clear()


def install_hooks() -> None:
    """Call begin_shutdown when the server that loaded Django stops (daphne/Twisted only, when loaded)."""
    global _hooked
    if _hooked:
        return
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None and hasattr(reactor, "addSystemEventTrigger"):
        reactor.addSystemEventTrigger("before", "shutdown", begin_shutdown)
        _hooked = True
