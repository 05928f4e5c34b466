"""Helpers shared by the benchmark scripts (run as `python bench/<name>.py`, so this imports as `common`)."""

import os
import socket
from pathlib import Path

HOST = "127.0.0.1"
PG_DSN = f"host={HOST} port=5432 user=postgres dbname=postgres"


def interrupt_on_sigterm() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt (SIGINT even when the script was started with it ignored):
    a bench's `finally` then stops its servers and drops its database."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


# --------------------------------------------------------------------------- processes and their CPU

def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (psutil when installed, else Linux /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            return [pid] + [child.pid for child in root.children(recursive=True)]
        except psutil.Error:
            return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and every descendant now alive (a process that ended is no longer
    counted: measure over periods in which the servers keep their processes, as gunicorn and nginx do)."""
    total = 0.0
    for member in process_tree(pid):
        seconds = cpu_seconds(member)
        if seconds == seconds:  # not NaN (it ended between the listing and the read)
            total += seconds
    return total


def stop_process_group(proc, timeout: float = 20.0) -> None:
    """TERM a process started with start_new_session=True, wait, then KILL its whole group."""
    import signal
    import subprocess

    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left behind
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


class ServeAll:
    """LabManager as production runs it: `bin/serve all` (nginx on a free 127.0.0.1 port in front of gunicorn
    and daphne, each on a free port), with the default process counts unless `env` sets them. A context
    manager: started and health-checked on entry (`.url`, `.pid`), stopped (TERM, then KILL of the group)
    on exit. Output goes to `log`."""

    def __init__(self, env: dict, log: Path, root: Path, health: str = "/api/diagnostics/health"):
        self.env, self.log_path, self.root, self.health = env, log, root, health
        self.proc = None
        self.run_dir = None
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self):
        import shutil
        import subprocess
        import time
        import urllib.error
        import urllib.request

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port may be taken between the probe and the bind
            port, web, asgi = free_port(), free_port(), free_port()
            self.run_dir = self.root / "var" / "bench" / f"nginx-{port}"
            env = {**self.env, "HOST": HOST, "PORT": str(port), "WEB_PORT": str(web), "ASGI_PORT": str(asgi),
                   "PROXY_RUN_DIR": str(self.run_dir)}
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([str(self.root / "bin" / "serve"), "all"], cwd=self.root, env=env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 90
            # Each server answers, then the proxy in front of them.
            probes = [f"http://{HOST}:{web}", f"http://{HOST}:{asgi}", f"http://{HOST}:{port}"]
            while probes and time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    urllib.request.urlopen(probes[0] + self.health, timeout=2).read()
                    probes.pop(0)
                except urllib.error.HTTPError:  # an answer (e.g. a redirect to HTTPS): the server is up
                    probes.pop(0)
                except OSError:
                    time.sleep(0.2)
            if not probes:
                self.url = f"http://{HOST}:{port}"
                self.port = port
                return self
            stop_process_group(self.proc)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        raise RuntimeError(f"bin/serve all did not start (see {self.log_path})")

    def __exit__(self, *exc):
        import shutil

        stop_process_group(self.proc)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)  # nginx's rendered config, pid file and temp files
        return False
