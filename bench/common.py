"""The benchmarks' harness: what every script in bench/ shares.

The scripts are modules of the `bench` package, run from the repository root (which puts the root, and with it
`apps`, `labmanager`, `simulators` and `bench`, on the import path):

    .venv/bin/python -m bench.<name> [options]

What it offers:
- running a bench: `argument_parser` (its usage says `python -m bench.<name>`), `run(main)` (SIGTERM and
  SIGINT interrupt it so that its `finally` blocks stop the servers and drop the databases; `Failure` prints
  FAILED and exits 1, an interrupt exits 130);
- settings and databases: `production_env` (labmanager.settings_production with the defaults production runs),
  `setup_django` (this process), `fresh_sqlite`, `migrate` and `django_run` (subprocesses), `pg_available`,
  `pg_admin`, `pg_create`, `pg_drop`;
- processes: `free_port`, `spawn`, `wait_http`, `wait_tcp`, `stop_process_group`, `stop_processes`, and
  `ServeAll`: LabManager as production runs it, `bin/serve all`;
- CPU: `cpu_seconds`, `process_tree`, `tree_cpu_seconds`, `CpuMeter` (servers' process trees and this client);
- load: `Connection` (a lean asyncio HTTP/1.1 keep-alive client: on 2 shared cores httpx's own CPU would cap
  the figures), `bounded_load` (concurrent workers each keeping one request in flight, bounded in time and in
  count, every answer checked by the caller's request function; requests, elapsed, latencies and CPU);
- figures and report: `percentile` (nearest rank), `requests_per_second`, `cpu_ms_per_request`, `Table`.
"""

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the repository
BENCH_DIR = ROOT / "var" / "bench"  # logs, SQLite files, the neops venv
PG_DSN = f"host={HOST} port=5432 user=postgres dbname=postgres"


class Failure(Exception):
    """A check of a bench failed (a wrong answer, a server that did not start): FAILED, exit 1."""


# --------------------------------------------------------------------------- running a bench

def argument_parser(doc: str, module: str) -> argparse.ArgumentParser:
    """The command line parser of the bench `module` (its __spec__.name): its usage says `python -m module`,
    its description is the first paragraph of `doc`."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])


def interrupt_on_sigterm() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt (SIGINT even when the script was started with it ignored):
    a bench's `finally` then stops its servers and drops its database."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(main: Callable[[], int | None]) -> None:
    """Run a bench's `main()` and exit with its return code: SIGTERM and SIGINT interrupt it (its `finally`
    blocks run), a `Failure` prints FAILED and exits 1, an interrupt exits 130."""
    interrupt_on_sigterm()
    try:
        code = main()
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


# --------------------------------------------------------------------------- settings and databases

def production_env(**settings) -> dict:
    """The environment of LabManager's servers (and of a bench's own Django, `setup_django`): this process's
    environment with labmanager.settings_production, the process counts production runs (WEB_PROCESSES,
    WEB_THREADS and PROXY_PROCESSES unset: their defaults) and the application's routes (ROOT_URLCONF unset),
    then `settings` (a value of None unsets the variable)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="labmanager.settings_production", PYTHONPATH=str(ROOT),
               SECRET_KEY="bench-" + "x" * 60, ALLOWED_HOSTS=f"{HOST},testserver")
    for name in ("ROOT_URLCONF", "WEB_PROCESSES", "WEB_THREADS", "PROXY_PROCESSES"):
        env.pop(name, None)  # the defaults: what production runs
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def setup_django(env: dict | None = None, *, migrate: bool = False) -> None:
    """Django in this process; `env`, when given, becomes this process's whole environment first (e.g.
    production_env's, or dict(os.environ, ...)); `migrate` then migrates the database."""
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def setup_bench_database(sqlite_path: Path, **settings) -> None:
    """Django in this process on a migrated database: DATABASE_URL's when set (PostgreSQL), else a fresh SQLite
    file at `sqlite_path`; `settings` (environment names) are set over this process's environment."""
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "labmanager.settings")
    if "DATABASE_URL" not in env:
        fresh_sqlite(sqlite_path)
        env["SQLITE_PATH"] = str(sqlite_path)
    env.setdefault("LOG_LEVEL", "WARNING")
    env.update({name: str(value) for name, value in settings.items()})
    setup_django(env, migrate=True)


def fresh_sqlite(path: Path) -> None:
    """No SQLite database at `path` (nor its journal files); its directory exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def migrate(env: dict, root: Path = ROOT) -> None:
    """`manage.py migrate` of the checkout `root` in a subprocess on `env`."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=root, env=env, check=True,
                   timeout=600)


def django_run(env: dict, code: str, timeout: float = 300) -> str:
    """Run `code` after django.setup() in a subprocess on `env` (from the repository root); its stdout."""
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout


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


def pg_create(name: str) -> str:
    """A new, empty PostgreSQL database `name` on 127.0.0.1:5432 (dropped first if it exists); its URL."""
    pg_drop(name)
    pg_admin(f'CREATE DATABASE "{name}"')
    return f"postgres://postgres@{HOST}:5432/{name}"


def pg_drop(name: str) -> None:
    """Drop the PostgreSQL database `name` if it exists, closing its connections (this process's Django ones
    first)."""
    if "django.db" in sys.modules:
        from django.db import connections

        try:
            connections.close_all()
        except Exception:  # Django not set up
            pass
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def spawn(args: list[str], env: dict, log: Path | None, *, cwd: Path = ROOT, **popen) -> subprocess.Popen:
    """Start a server in a session (process group) of its own, its output appended to `log` (None: `popen`
    says where it goes); stop it with stop_process_group or stop_processes."""
    if log is None:
        return subprocess.Popen(args, cwd=cwd, env=env, start_new_session=True, **popen)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **popen)


def wait_http(port: int, path: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> bool:
    """Whether an HTTP server answers (any status) on 127.0.0.1:`port` within `timeout` seconds (and while
    `proc` runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1."):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def wait_tcp(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> bool:
    """Whether 127.0.0.1:`port` accepts connections within `timeout` seconds (and while `proc` runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def stop_process_group(proc, timeout: float = 20.0) -> None:
    """TERM a process started with start_new_session=True, wait, then KILL its whole group."""
    import signal

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


def stop_processes(procs, timeout: float = 20.0) -> None:
    """Stop several servers started by `spawn`: TERM all at once, then stop_process_group each."""
    procs = [proc for proc in procs if proc is not None]
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        stop_process_group(proc, timeout)


class ServeAll:
    """LabManager as production runs it: `bin/serve all` (nginx on a free 127.0.0.1 port in front of gunicorn
    and daphne, each on a free port), with the default process counts unless `env` sets them. A context
    manager: started and health-checked on entry (`.url`, `.port`, `.pid`), stopped (TERM, then KILL of the
    group) on exit. Output goes to `log`. `root`: the checkout to run (default: this one)."""

    def __init__(self, env: dict, log: Path, root: Path = ROOT, health: str = "/api/diagnostics/health"):
        self.env, self.log_path, self.root, self.health = env, log, root, health
        self.proc = None
        self.run_dir = None
        self.url = ""
        self.port = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self):
        import shutil
        import urllib.error
        import urllib.request

        for _attempt in range(3):  # a free port may be taken between the probe and the bind
            port, web, asgi = free_port(), free_port(), free_port()
            self.run_dir = self.root / "var" / "bench" / f"nginx-{port}"
            env = {**self.env, "HOST": HOST, "PORT": str(port), "WEB_PORT": str(web), "ASGI_PORT": str(asgi),
                   "PROXY_RUN_DIR": str(self.run_dir)}
            self.proc = spawn([str(self.root / "bin" / "serve"), "all"], env, self.log_path, cwd=self.root)
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


# --------------------------------------------------------------------------- processes and their CPU

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show whether a server was saturated."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


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


class CpuMeter:
    """CPU seconds spent over a period (a `with` block, or start() and stop()) by each server's process tree
    (`pids`: the root of each) and by this process (the client): `.servers` (one figure per pid), `.server`
    (their sum) and `.client`."""

    def __init__(self, *pids: int):
        self.pids = pids
        self.servers: list[float] = []
        self.server = self.client = 0.0

    def start(self) -> "CpuMeter":
        self._servers0 = [tree_cpu_seconds(pid) for pid in self.pids]
        self._client0 = time.process_time()
        return self

    def stop(self) -> "CpuMeter":
        self.client = time.process_time() - self._client0
        self.servers = [tree_cpu_seconds(pid) - before for pid, before in zip(self.pids, self._servers0)]
        self.server = sum(self.servers)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


# --------------------------------------------------------------------------- load

class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, one request at a time (Content-Length or
    chunked bodies); `headers` go with every request."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port = port
        self.headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict | None = None,
                      body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += self.headers + "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        message = (head + "\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            try:
                self.writer.write(message)
                status_line = await self.reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                break
            self.close()
            # A kept-alive connection the server closed while it was idle (uvicorn after 5 s): nothing of this
            # request was answered, so it is sent again on a new connection, as HTTP clients do. Once.
            if not reused or attempt == 2:
                raise Failure(f"{method} {path}: connection closed")
        status = int(status_line.split()[1])
        fields = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readline()  # the blank line after the last chunk (no trailers)
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readline()
        elif status in (204, 304):
            body = b""
        else:
            body = await self.reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def bounded_load(send: Callable[[int, int], Awaitable[object]], *, workers: int, seconds: float,
                       max_requests: int, check: Callable[[object], None] | None = None,
                       cpu_pids: tuple[int, ...] = ()) -> dict:
    """`workers` concurrent workers, each keeping one request in flight, for at most `seconds` and at most
    `max_requests` requests in all. `send(worker, n)` sends one request and returns its answer; `n` numbers
    the requests of all workers (worker, worker + workers, ...). `check(answer)`, after the request's latency
    is taken, raises (e.g. Failure) on a wrong answer; `send` may check it itself instead.

    Returns {"requests": answered, "elapsed": seconds, "latencies": [seconds of each request]}, and with
    `cpu_pids` (the servers' process-tree roots) "server_cpu" and "client_cpu": CPU seconds over the period."""
    issued = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int):
        nonlocal issued
        n = index
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            answer = await send(index, n)
            latencies.append(time.perf_counter() - started)
            if check is not None:
                check(answer)
            n += workers

    cpu = CpuMeter(*cpu_pids).start()
    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(workers)))
    elapsed = time.perf_counter() - started
    cpu.stop()
    result = {"requests": len(latencies), "elapsed": elapsed, "latencies": latencies}
    if cpu_pids:
        result.update(server_cpu=cpu.server, client_cpu=cpu.client)
    return result


# --------------------------------------------------------------------------- figures and report

def percentile(values, p: float) -> float:
    """The `p`-th percentile (0-100) of `values`, nearest rank (a value of the sample); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def requests_per_second(runs: list[dict]) -> float:
    """Requests per second over `bounded_load` results (their requests over their summed time)."""
    return sum(run["requests"] for run in runs) / sum(run["elapsed"] for run in runs)


def cpu_ms_per_request(runs: list[dict], key: str = "server_cpu") -> float:
    """Milliseconds of CPU (`server_cpu` or `client_cpu` seconds) per request over `bounded_load` results."""
    return sum(run[key] for run in runs) / sum(run["requests"] for run in runs) * 1000


class Table:
    """A small text table: `columns` are (title, format spec[, gap before it]) — e.g. ("req/s", ">8.1f") —
    and `print_header()` then `print_row(*values)` print aligned lines (a str value takes only the column's
    alignment and width; values past the columns follow, space-separated). `trailer` ends the header line
    (a last column titled "" puts it after that column's gap)."""

    _SPEC = re.compile(r"^([<>^]?)(\d*)")

    def __init__(self, *columns: tuple, trailer: str = ""):
        self.columns = [(title, spec, gap[0] if gap else " ") for title, spec, *gap in columns]
        self.trailer = trailer

    def _cell(self, value, spec: str) -> str:
        align, width = self._SPEC.match(spec).groups()
        if isinstance(value, str):
            return f"{value:{align or '<'}{width}}"
        return f"{value:{spec}}"

    def line(self, *values) -> str:
        cells = [(gap if i else "") + self._cell(value, spec)
                 for i, ((_, spec, gap), value) in enumerate(zip(self.columns, values))]
        extra = [str(value) for value in values[len(self.columns):]]
        return "".join(cells) + "".join(" " + value for value in extra)

    def header(self) -> str:
        text = self.line(*(title for title, _, _ in self.columns))
        return text + self.trailer

    def print_header(self) -> None:
        print(self.header())

    def print_row(self, *values) -> None:
        print(self.line(*values), flush=True)
