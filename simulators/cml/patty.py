"""CML PATty in the simulator: while a node runs (STARTED/QUEUED/BOOTED), a tag `serial:<port>` (or
`serial:<port>:0`) on it opens a TCP listener on 127.0.0.1:<port> that behaves like the device's console: a
banner with the node's label, the prompt `<label>>` (user EXEC) or `<label>#` after `enable`, the input lines
echoed, `show version`, `enable`, `disable`, `exit` (closes), anything else `% Invalid input detected`.

Stopping, wiping or deleting the lab (or the simulator) closes the listener and its open connections. A port
that cannot be bound (in use) is skipped and logged once, as CML's PATty logs a clash. Everything is bounded:
threads per listener (one accept loop, at most MAX_CONNECTIONS sessions), line length, idle time.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading

from .model import ACTIVE_STATES

SERIAL_TAG = re.compile(r"serial:(\d{1,5})(?::0)?")
MAX_CONNECTIONS = 16  # per listener
MAX_LINE = 1024
IDLE_SECONDS = 600.0
VERSION = """Cisco IOS Software, IOSv Software (VIOS-ADVENTERPRISEK9-M), Version 15.9(3)M6, RELEASE SOFTWARE (fc1)
Technical Support: http://www.cisco.com/techsupport
Copyright (c) 1986-2022 by Cisco Systems, Inc.

ROM: Bootstrap program is IOSv

{label} uptime is 1 minute
System image file is "flash0:/vios-adventerprisek9-m"

cisco IOSv (revision 1.0) processor with 460033K/62464K bytes of memory.
Processor board ID {serial}
2 Gigabit Ethernet interfaces
DRAM configuration is 72 bits wide with parity disabled.
256K bytes of non-volatile configuration memory.
Configuration register is 0x0
"""


def serial_ports(node) -> list[int]:
    """The console ports a node's tags ask PATty for (line 0 only: the simulator has no aux line)."""
    ports = []
    for tag in node.attrs.get("tags") or []:
        match = SERIAL_TAG.fullmatch(str(tag))
        if match and 0 < int(match.group(1)) < 65536:
            ports.append(int(match.group(1)))
    return ports


class ConsoleListener:
    """One node's console on 127.0.0.1:<port>: an accept thread and a thread per session."""

    def __init__(self, port: int, label: str, serial: str):
        self.port, self.label, self.serial = port, label, serial
        self._stop = threading.Event()
        self._sessions: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind(("127.0.0.1", port))  # loopback only, whatever the caller asks
            self._socket.listen(MAX_CONNECTIONS)
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name=f"cml-sim-console-{port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                if self._stop.is_set() or len(self._sessions) >= MAX_CONNECTIONS:
                    with contextlib.suppress(OSError):
                        connection.sendall(b"% Console busy: too many sessions\r\n")
                    connection.close()
                    continue
                self._sessions.add(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True,
                             name=f"cml-sim-console-{self.port}-session").start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(IDLE_SECONDS)
            Session(self.label, self.serial, connection.sendall).run(connection.recv)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sessions.discard(connection)
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        """Stop listening and end every open session."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._socket.close()
        with self._lock:
            sessions = list(self._sessions)
        for connection in sessions:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=2)


class Session:
    """The device side of one console session: line in, answer out."""

    def __init__(self, label: str, serial: str, send):
        self.label, self.serial, self.send = label, serial, send
        self.privileged = False

    @property
    def prompt(self) -> str:
        return f"{self.label}{'#' if self.privileged else '>'}"

    def write(self, text: str) -> None:
        self.send(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())

    def run(self, recv) -> None:
        self.write(f"\nUser Access Verification on {self.label} (CML simulator console)\n\n{self.prompt}")
        buffer, after_cr = b"", False
        while True:
            data = recv(4096)
            if not data:
                return
            if after_cr and data.startswith(b"\n"):  # the \n of a \r\n split over two reads
                data = data[1:]
            after_cr = data.endswith(b"\r")
            buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not self.command(line.decode("utf-8", "replace").strip()):
                    return
            if len(buffer) > MAX_LINE:
                buffer = b""
                self.write("\n% Line too long\n" + self.prompt)

    def command(self, line: str) -> bool:
        """Answer one line (echoed first, as a terminal sees it); False when the session ends."""
        self.write(line + "\n")
        words = line.lower().split()
        if not words:
            pass
        elif words == ["exit"] or words == ["logout"] or words == ["quit"]:
            self.write(f"\n{self.label} con0 is now available\n")
            return False
        elif words == ["enable"] or words == ["en"]:
            self.privileged = True
        elif words == ["disable"]:
            self.privileged = False
        elif words[:2] == ["show", "version"] or words[:2] == ["sh", "ver"]:
            self.write(VERSION.format(label=self.label, serial=self.serial))
        else:
            self.write("% Invalid input detected at '^' marker.\n")
        self.write(self.prompt)
        return True


class Patty:
    """The listeners of one simulated controller, kept in step with its labs by `reconcile` (called after each
    API request, under the controller's lock)."""

    def __init__(self):
        self._listeners: dict[tuple[str, str, int], ConsoleListener] = {}
        self._clashes: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def wanted(self, labs) -> dict[tuple[str, str, int], object]:
        return {(lab.id, node.id, port): node for lab in labs for node in lab.nodes
                if node.state in ACTIVE_STATES for port in serial_ports(node)}

    def reconcile(self, labs) -> None:
        wanted = self.wanted(labs)
        with self._lock:
            for key in [key for key in self._listeners if key not in wanted]:
                self._listeners.pop(key).close()
            self._clashes &= set(wanted)
            for key, node in wanted.items():
                if key in self._listeners or key in self._clashes:
                    continue
                try:
                    self._listeners[key] = ConsoleListener(key[2], node.label, node.id[:11].upper())
                except OSError as exc:
                    self._clashes.add(key)
                    print(f"cml simulator PATty: serial:{key[2]} of node {node.label} not served: {exc}",
                          file=sys.stderr)

    def ports(self) -> dict[int, str]:
        """Open console ports -> node label (for /_sim/state and tests)."""
        with self._lock:
            return {port: listener.label for (_, _, port), listener in self._listeners.items()}

    def close_all(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
            self._clashes.clear()
        for listener in listeners:
            listener.close()
