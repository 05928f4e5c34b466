"""Docs cite tests that exist. Every `tests/<path>.py` a document names is a file, every `tests/<path>.py::name`
(and `…::name`, which continues the file last named) a test or class defined in that file, and every other
`test_<name>` a test defined somewhere under tests/. Scanned: docs/**/*.md, README.md, deploy/**/*.md, outside
fenced code blocks (examples there are not ours). Cheap (parses only), so a renamed test cannot leave a
control in docs/security.md pointing at nothing."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?|…::(\w+)|(?<![\w/.])(test_\w+)(?![\w.])")


def _defined() -> dict[str, set[str]]:
    """Per test file (its path from the root): the functions and classes it defines."""
    defined = {}
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        defined[path.relative_to(ROOT).as_posix()] = {
            node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return defined


def _documents() -> list[Path]:
    return sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md", *(ROOT / "deploy").rglob("*.md")])


def _prose(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def dangling_references(documents: list[Path], defined: dict[str, set[str]]) -> list[str]:
    everywhere = set().union(*defined.values())
    dangling = []
    for document in documents:
        current = None  # the test file last named: what `…::name` continues
        where = document.relative_to(ROOT).as_posix() if document.is_relative_to(ROOT) else document.name
        for number, line in _prose(document.read_text()):
            for match in REFERENCE.finditer(line):
                path, name, continued, bare = match.groups()
                if path:
                    current = path
                    if path not in defined:
                        dangling.append(f"{where}:{number}: no file {path}")
                    elif name and name not in defined[path]:
                        dangling.append(f"{where}:{number}: no {path}::{name}")
                elif continued:
                    if continued not in defined.get(current, ()):
                        dangling.append(f"{where}:{number}: no {current}::{continued} (…::)")
                elif bare not in everywhere:
                    dangling.append(f"{where}:{number}: no test {bare}")
    return dangling


def test_every_test_the_docs_cite_exists():
    assert dangling_references(_documents(), _defined()) == []


def test_the_check_finds_a_renamed_test(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("| threat | control | `tests/test_roles.py::test_gone`, `…::test_also_gone`, `test_nowhere` |\n"
                    "```python\ndef test_an_example(): ...\n```\n`tests/not_there.py`\n")
    defined = {"tests/test_roles.py": {"test_kept"}}

    found = [problem.split(": ", 1)[1] for problem in dangling_references([page], defined)]

    assert found == ["no tests/test_roles.py::test_gone", "no tests/test_roles.py::test_also_gone (…::)",
                     "no test test_nowhere", "no file tests/not_there.py"]
