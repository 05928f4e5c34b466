"""The production image runs the runtime dependencies of pyproject.toml and the runtime code, nothing more:
the simulators (simulators/) and moto are development and test tools (the `sim` and `dev` extras).

No container engine here: the image's build context is worked out from .dockerignore, and its virtualenv
from pip resolving what the Dockerfile's build stage installs (`pip install .` over pyproject.toml and
README.md alone)."""

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What runtime code may never import: the simulators, and moto with the web framework of its server.
DEV_ONLY_MODULES = {"simulators", "moto", "flask", "werkzeug"}
# pip's words for "the index could not be reached" (the resolution test skips then, and says so).
OFFLINE = re.compile(r"NewConnectionError|ConnectTimeout|ReadTimeout|Temporary failure in name resolution|"
                     r"Network is unreachable|ProxyError|Max retries exceeded")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def _dev_only_distributions() -> set[str]:
    """Every distribution the extras name, less the project itself (`dev` includes `labmanager[sim]`)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    return {_name(r) for requirements in extras.values() for r in requirements} - {"labmanager"}


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns this .dockerignore uses: the last pattern that matches the path or one
    of its parent folders decides; `!` re-includes; a leading `**/` matches at any depth, the top included."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in candidates):
            ignored = not negated
    return ignored


def _build_context() -> list[str]:
    """The files `COPY . .` puts into the image: the repository less what .dockerignore leaves out."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    files = []
    for folder, dirs, names in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if not _ignored(prefix + d, patterns)]
        files += [prefix + n for n in names if not _ignored(prefix + n, patterns)]
    return files


def _imported_modules(path: Path) -> set[str]:
    """Top-level names a module imports, and the first part of each dotted string naming a module of ours
    (django-q2 task names, importlib)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                r"simulators(\.\w+)*", node.value):
            names.add("simulators")
    return names


def test_moto_is_in_a_dev_extra_and_not_in_the_runtime_dependencies():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]

    assert "moto" not in runtime
    assert "moto" in {_name(r) for r in extras["sim"]}
    assert "labmanager[sim]" in extras["dev"]  # what `make setup` installs: '.[dev]'
    assert runtime.isdisjoint(_dev_only_distributions())


def test_no_runtime_module_imports_the_simulators_or_moto():
    sources = [p for d in ("apps", "labmanager") for p in (ROOT / d).rglob("*.py")]
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_modules(p) & DEV_ONLY_MODULES) for p in sources}

    assert len(sources) > 100
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_image_gets_neither_the_simulators_nor_the_tests():
    context = _build_context()
    offenders = {path: sorted(_imported_modules(ROOT / path) & DEV_ONLY_MODULES)
                 for path in context if path.endswith(".py")}

    assert "manage.py" in context and "apps/workers/ec2.py" in context and "bin/serve" in context
    assert [p for p in context if p.split("/")[0] in ("simulators", "tests", "bench")] == []
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_dockerignore_rule_leaves_out_what_it_names():
    # The matcher above is ours, not Docker's: it must at least see the patterns this file uses.
    patterns = ["tests", "**/__pycache__", ".env.*", "!.env.example", "simulators"]

    assert _ignored("simulators/cml/server.py", patterns)
    assert _ignored("tests", patterns) and _ignored("__pycache__/x.pyc", patterns)
    assert _ignored("apps/workers/__pycache__/x.pyc", patterns)
    assert _ignored(".env.local", patterns) and not _ignored(".env.example", patterns)
    assert not _ignored("apps/workers/ec2.py", patterns) and not _ignored("simulatorsx.py", patterns)


def test_the_images_build_stage_installs_the_project_without_extras():
    """The Dockerfile's build stage, as pip resolves it: no extras, so no moto and no test tool."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    build_stage = dockerfile.split(" AS build", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^COPY pyproject\.toml README\.md \./$", build_stage, re.MULTILINE)
    assert re.search(r"^RUN pip install --no-cache-dir \.$", build_stage, re.MULTILINE)  # no [extras]


@pytest.fixture(scope="module")
def resolved_runtime(tmp_path_factory) -> set[str]:
    """What `pip install .` brings in a fresh environment (`--ignore-installed`: nothing counts as there),
    from the two files the build stage copies. Needs the package index: skipped when it cannot be reached."""
    source = tmp_path_factory.mktemp("image-build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    report = source / "report.json"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--retries", "1",
             "--timeout", "20", "--report", str(report), str(source)],
            capture_output=True, text=True, timeout=240, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip("pip could not resolve the runtime dependencies within 240 s (package index too slow)")
    if done.returncode != 0 and OFFLINE.search(done.stderr):
        pytest.skip("the package index cannot be reached: " + OFFLINE.search(done.stderr).group(0))
    assert done.returncode == 0, done.stderr[-3000:]
    return {_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}


def test_pip_resolves_the_runtime_without_moto_or_any_dev_tool(resolved_runtime):
    assert {"django", "boto3", "gunicorn", "daphne", "labmanager"} <= resolved_runtime  # it did resolve
    assert resolved_runtime & {"moto", "flask", "werkzeug"} == set()
    assert resolved_runtime & _dev_only_distributions() == set()
