"""Settings tell the truth: `.env.example` and the code agree, settings are read in one place, and
importing them has no side effect.

The rule for `.env.example`: it lists exactly the variables that the deployed processes read, namely
- the settings modules (`labmanager/settings.py`, `labmanager/settings_production.py`): `env.<type>("NAME")`
  and `os.environ` reads;
- the process configuration around them: `deploy/gunicorn.conf.py`, `deploy/healthcheck.py`, and the
  production commands of `bin/serve` (`web`, `asgi`, `qcluster`: what the image and compose run);
- the compose file's `${NAME}` substitutions (tests/deploy/test_compose.py checks those are listed);
- a few that libraries read themselves (LIBRARY_VARIABLES).
Development-only knobs (`bin/serve all|proxy`, `bin/run.sh`'s simulators, the benches) are documented in
README.md, not in `.env.example`.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MODULES = (ROOT / "labmanager/settings.py", ROOT / "labmanager/settings_production.py")
PROCESS_FILES = (ROOT / "deploy/gunicorn.conf.py", ROOT / "deploy/healthcheck.py")
PRODUCTION_COMMANDS = ("web", "asgi", "qcluster")  # functions of bin/serve
# Read by Django (the settings module) and boto3 (credentials), not by our code.
LIBRARY_VARIABLES = {"DJANGO_SETTINGS_MODULE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def env_example_names() -> set[str]:
    """Each `NAME=` or `# NAME=` line (a commented line shows the default)."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"


def python_reads(path: Path) -> set[str]:
    """Names read with env.<type>("NAME"), os.environ.get/setdefault("NAME"), os.environ["NAME"], os.getenv."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Call) and node.args and isinstance(func := node.func, ast.Attribute):
            on_env = getattr(func.value, "id", None) == "env"
            on_environ = _is_os_environ(func.value) and func.attr in ("get", "setdefault")
            getenv = func.attr == "getenv" and getattr(func.value, "id", None) == "os"
            if on_env or on_environ or getenv:
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def serve_reads() -> set[str]:
    """`${NAME...}` / `$NAME` in the bodies of bin/serve's production commands."""
    text = (ROOT / "bin/serve").read_text()
    names = set()
    for command in PRODUCTION_COMMANDS:
        body = re.search(rf"^{command}\(\) \{{\n(.*?)^\}}", text, re.MULTILINE | re.DOTALL)
        assert body, f"bin/serve has no {command}()"
        names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", body.group(1)))
    return names


def compose_substitutions() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "deploy/docker-compose.yml").read_text()))


def settings_reads() -> set[str]:
    return set().union(*(python_reads(path) for path in SETTINGS_MODULES))


def process_reads() -> set[str]:
    return set().union(*(python_reads(path) for path in PROCESS_FILES)) | serve_reads()


def test_the_readers_are_found():
    """The scans see what they should (a broken regex would make the two tests below pass on nothing)."""
    assert {"SECRET_KEY", "DATABASE_URL", "SESSION_API_RATE_LIMIT", "CONTENT_SECURITY_POLICY",
            "LIFECYCLE_TICK_BATCH"} <= settings_reads()
    assert {"WEB_PROCESSES", "WEB_BIND", "ASGI_BIND", "ASGI_DB_CONN_MAX_AGE", "PORT"} <= process_reads()
    assert len(settings_reads()) > 50


def test_every_variable_the_processes_read_is_in_env_example():
    missing = (settings_reads() | process_reads()) - env_example_names()

    assert missing == set(), f"read by the code but not in .env.example: {sorted(missing)}"


def test_every_variable_in_env_example_is_read():
    read = settings_reads() | process_reads() | compose_substitutions() | LIBRARY_VARIABLES

    stale = env_example_names() - read
    assert stale == set(), f"in .env.example but read by nothing: {sorted(stale)}"


def _python_sources():
    for folder in ("apps", "labmanager"):
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path


def test_settings_are_read_with_no_default_outside_the_settings():
    """`settings.NAME`, declared once in labmanager/settings.py: no getattr(settings, "NAME", default)."""
    offenders = []
    for path in _python_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) == 3
                    and getattr(node.args[0], "id", None) == "settings"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")

    assert offenders == []


def test_only_the_settings_read_the_environment():
    """Apps read configuration from django.conf.settings, never from the environment themselves
    (asgi.py and wsgi.py only choose the settings module)."""
    allowed = {*SETTINGS_MODULES, ROOT / "labmanager/asgi.py", ROOT / "labmanager/wsgi.py"}
    offenders = []
    for path in _python_sources():
        if path in allowed:
            continue
        if python_reads(path):
            offenders.append(str(path.relative_to(ROOT)))

    assert offenders == []


def test_importing_the_settings_creates_no_directory_and_builds_one_middleware_list(tmp_path):
    """A copy of the project package (and the CSP builder it imports) in an empty folder: importing both profiles leaves the folder as it
    was, and the production profile runs the very list of middleware the development settings declare
    (the Content-Security-Policy middleware unloads itself while the policy is empty)."""
    for name in ("labmanager/__init__.py", "labmanager/settings.py", "labmanager/settings_production.py",
                 "apps/__init__.py", "apps/core/__init__.py", "apps/core/csp.py",  # the production CSP's builder
                 "apps/core/known_secrets.py"):  # and the published secrets it refuses
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    script = ("import json, labmanager.settings as dev, labmanager.settings_production as prod; "
              "print(json.dumps([dev.MIDDLEWARE, prod.MIDDLEWARE, dev.CONTENT_SECURITY_POLICY, "
              "prod.CONTENT_SECURITY_POLICY]))")
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("CONTENT_SECURITY_POLICY", "DJANGO_SETTINGS_MODULE")}
    environment.update(PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1", SECRET_KEY="t" * 60,
                       ALLOWED_HOSTS="labs.example.org")

    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    development, production, dev_policy, prod_policy = json.loads(done.stdout)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert development == production
    assert "apps.core.csp.ContentSecurityPolicyMiddleware" in development
    assert dev_policy == "" and prod_policy.startswith("default-src 'self'")
