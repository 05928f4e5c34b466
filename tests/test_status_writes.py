"""Nothing writes `status` except the lifecycle functions (one per state machine), nor the engine's lease fields
except its lease module, nor a lablet instance's step results except apps/lablets/services/ (the engine writes
nothing itself).

The scan is textual (regexes) and the enclosing function of each hit is found with `ast`.
For each guarded field (`status`; `claimed_until`, `attempts`, `next_attempt_at`, `lifecycle_step`; the results
in RESULT_FIELDS) it looks for:
  - attribute assignment:   `obj.status = ...`
  - a `status=` keyword (or a "status" dict key) inside `.update(`, `.create(`, `.get_or_create(`,
    `.update_or_create(`, `.bulk_create(`, `.bulk_update(` calls, even over several lines;
  - `setattr(obj, "status", ...)`.
One thing is not a write: a plain (non-model) class setting `self.status` in its own `__init__`, e.g. an
HTTP error object keeping its status code (the CML simulator's `SimError`).
"""

import ast
import inspect
import re
from pathlib import Path

from django.conf import settings

from apps.lablets.services import lease

ROOT = Path(settings.BASE_DIR)
SCANNED_DIRS = ("apps", "labmanager")

# (path relative to the project root, function name) allowed to write status.
ALLOWED = {
    ("apps/lablets/services/instances.py", "lablet_instances_transition_many"),
    ("apps/workers/services/fleet.py", "worker_transition"),
    ("apps/sessions/services/transitions.py", "session_transitions_many"),
    ("apps/sessions/services/transitions.py", "session_lab_transition"),
    ("apps/webhooks/delivery.py", "webhook_delivery_transition"),
    ("apps/lablets/services/warm.py", "warm_lab_transition"),
}

# The lablet instance's lease and retry bookkeeping: a second state, written only by the lease module.
LEASE_FIELDS = ("claimed_until", "attempts", "next_attempt_at", "lifecycle_step")
# (path, function) allowed to write them; None: any function of that file.
LEASE_ALLOWED = {
    ("apps/lablets/services/lease.py", None),
    # Other models' fields of the same name, each written in one place: a webhook delivery's log row
    # (when it is retried) and a session lab teardown's attempt count.
    ("apps/webhooks/delivery.py", "_record"),
    ("apps/sessions/services/labs.py", "lab_teardown_run"),
    # A warm lab's own lease (apps/lablets/services/warm.py: claimed and given back there only).
    ("apps/lablets/services/warm.py", "warm_lab_claim"),
    ("apps/lablets/services/warm.py", "warm_lab_release"),
}

# A lablet instance's step results: written only by apps/lablets/services/ (services/steps.py for the engine's
# steps; grading and activity reports in services/instances.py), never by the engine (apps/lablets/engine/).
RESULT_FIELDS = ("cml_lab_id", "console", "console_access", "archive_key", "artifacts", "last_activity_at", "cml_lab_removed_at",
                 "termination_reason", "expiring_notified_at")
RESULT_ALLOWED_DIR = "apps/lablets/services/"
# Other models' fields of the same name, each written in one place: a session lab's CML lab id (import step),
# the record of a lab left for a later teardown, and an orphan lab found on a worker's CML (apps.fleet).
RESULT_ALLOWED = {
    ("apps/sessions/services/labs.py", "_import_step"),
    ("apps/sessions/services/labs.py", "_teardown_later"),
    ("apps/fleet/reconcile.py", "_orphans_of"),
}

WRITE_CALL = re.compile(r"\.(?:update|create|get_or_create|update_or_create|bulk_create|bulk_update)\(")
STRING_LITERAL = re.compile(r"""[bBrRuUfF]*(['"])(?:\\.|(?!\1).)*\1""")


def _patterns(field: str):
    return (
        re.compile(rf"(?:\b(?P<owner>\w+))?\.{field}\s*(?::[^=\n]+)?=(?!=)"),  # attribute assignment
        re.compile(rf"""\bsetattr\(\s*[^,()]+,\s*(['"]){field}\1"""),
        re.compile(rf"(?<![\w.]){field}\s*=(?!=)"),  # a keyword argument
        re.compile(rf"""(['"]){field}\1\s*:"""),  # a dict key
    )


def _call_arguments(source: str, open_paren: int) -> str:
    """The text between `source[open_paren]` == "(" and its matching ")", skipping string literals."""
    depth, index, quote = 0, open_paren, None
    while index < len(source):
        char = source[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#":
            newline = source.find("\n", index)
            index = len(source) if newline == -1 else newline
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return source[open_paren + 1 : index]
        index += 1
    return source[open_paren + 1 :]


def _innermost(tree: ast.AST, line: int, kinds) -> ast.AST | None:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, kinds) and node.lineno <= line <= node.end_lineno:
            if best is None or node.lineno >= best.lineno:
                best = node
    return best


def _enclosing_function(tree: ast.AST, line: int) -> str | None:
    function = _innermost(tree, line, (ast.FunctionDef, ast.AsyncFunctionDef))
    return function.name if function else None


def _is_plain_constructor(tree: ast.AST, line: int) -> bool:
    """Is `line` inside `__init__` of a class that is not a Django model?"""
    if _enclosing_function(tree, line) != "__init__":
        return False
    cls = _innermost(tree, line, ast.ClassDef)
    return cls is not None and not any(ast.unparse(base).endswith("Model") for base in cls.bases)


def field_writes(source: str, field: str = "status") -> list[tuple[int, str]]:
    """(line, snippet) of every write of `field` found in `source`."""
    attribute, setattr_, keyword, dict_key = _patterns(field)
    tree = ast.parse(source)
    hits = []
    for match in attribute.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        if match.group("owner") == "self" and _is_plain_constructor(tree, line):
            continue
        hits.append((match.start(), match.group(0)))
    for match in setattr_.finditer(source):
        hits.append((match.start(), match.group(0)))
    for call in WRITE_CALL.finditer(source):
        arguments = _call_arguments(source, call.end() - 1)
        if keyword.search(STRING_LITERAL.sub('""', arguments)) or dict_key.search(arguments):
            hits.append((call.start(), call.group(0) + arguments.strip()[:80] + ")"))
    return sorted((source.count("\n", 0, offset) + 1, snippet) for offset, snippet in hits)


def status_writes(source: str) -> list[tuple[int, str]]:
    return field_writes(source, "status")


def forbidden_status_writes(source: str, relative_path: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for line, snippet in status_writes(source):
        function = _enclosing_function(tree, line)
        if (relative_path, function) not in ALLOWED:
            found.append(f"{relative_path}:{line} in {function or '<module>'}: {snippet}")
    return found


def forbidden_lease_writes(source: str, relative_path: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for field in LEASE_FIELDS:
        for line, snippet in field_writes(source, field):
            function = _enclosing_function(tree, line)
            if (relative_path, None) not in LEASE_ALLOWED and (relative_path, function) not in LEASE_ALLOWED:
                found.append(f"{relative_path}:{line} in {function or '<module>'}: {snippet}")
    return found


def forbidden_result_writes(source: str, relative_path: str) -> list[str]:
    if relative_path.startswith(RESULT_ALLOWED_DIR):
        return []
    tree = ast.parse(source)
    found = []
    for field in RESULT_FIELDS:
        for line, snippet in field_writes(source, field):
            function = _enclosing_function(tree, line)
            if (relative_path, function) not in RESULT_ALLOWED:
                found.append(f"{relative_path}:{line} in {function or '<module>'}: {snippet}")
    return found


# What the engine must not call: it commits through the services, so it writes no row and no journal entry itself.
ENGINE_DIR = "apps/lablets/engine"
ENGINE_WRITE = re.compile(
    r"\.(?:update|save|create|get_or_create|update_or_create|bulk_create|bulk_update|delete)\("
    r"|\b(?:audit_record|audit_record_many|instance_audit|instance_audit_entry)\b")


def engine_writes(source: str, relative_path: str) -> list[str]:
    code = STRING_LITERAL.sub('""', source)
    return [f"{relative_path}:{code.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
            for match in ENGINE_WRITE.finditer(code)]


def _python_files():
    for directory in SCANNED_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield path


def test_nothing_but_the_lifecycle_functions_assigns_status():
    scanned = list(_python_files())
    assert len(scanned) > 20, "the scan found suspiciously few files"
    offenders = []
    for path in scanned:
        offenders += forbidden_status_writes(path.read_text(), path.relative_to(ROOT).as_posix())
    assert offenders == [], "status written outside the lifecycle functions:\n" + "\n".join(offenders)


def test_nothing_but_the_lease_module_writes_the_engine_lease_fields():
    offenders = []
    for path in _python_files():
        offenders += forbidden_lease_writes(path.read_text(), path.relative_to(ROOT).as_posix())
    assert offenders == [], "lease fields written outside apps/lablets/services/lease.py:\n" + "\n".join(offenders)


def test_the_lease_module_is_where_the_scan_expects_it():
    for relative_path, function in LEASE_ALLOWED:
        source = (ROOT / relative_path).read_text()
        tree = ast.parse(source)
        writes = [line for field in LEASE_FIELDS for line, _ in field_writes(source, field)
                  if function is None or _enclosing_function(tree, line) == function]
        assert writes, f"{relative_path}:{function or '*'} no longer writes the lease fields where the scan allows it"
    lease = (ROOT / "apps/lablets/services/lease.py").read_text()
    for field in LEASE_FIELDS:
        assert field_writes(lease, field), f"the lease module no longer writes {field}"


def test_nothing_outside_the_lablet_services_writes_an_instance_step_result():
    offenders = []
    for path in _python_files():
        offenders += forbidden_result_writes(path.read_text(), path.relative_to(ROOT).as_posix())
    assert offenders == [], (f"lablet instance results written outside {RESULT_ALLOWED_DIR}:\n" + "\n".join(offenders))


def test_the_engine_writes_nothing_itself():
    engine = sorted((ROOT / ENGINE_DIR).rglob("*.py"))
    assert len(engine) >= 5, "the scan found suspiciously few engine modules"
    offenders = []
    for path in engine:
        offenders += engine_writes(path.read_text(), path.relative_to(ROOT).as_posix())
    assert offenders == [], "the engine writes rows or journal entries itself:\n" + "\n".join(offenders)


def test_the_lease_functions_write_no_other_fields():
    # A `**fields` pass-through would let the engine write any field through the lease module, out of the scan's sight.
    functions = [lease.Claim.progress, lease.Claim.release, lease.lease_claim, lease.lease_take,
                 lease.lease_restart, lease.lease_clear, lease.lease_waiting, lease.lease_progress, lease.lease_fail]
    takes_any = [f.__qualname__ for f in functions
                 if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(f).parameters.values())]
    assert takes_any == [], f"lease functions that pass other fields through: {takes_any}"


def test_the_result_writers_are_where_the_scan_expects_them():
    services = {path.relative_to(ROOT).as_posix(): path.read_text()
                for path in sorted((ROOT / RESULT_ALLOWED_DIR).rglob("*.py"))}
    for field in RESULT_FIELDS:
        assert any(field_writes(source, field) for source in services.values()), (
            f"nothing in {RESULT_ALLOWED_DIR} writes {field} any more: the scan proves nothing about it")
    for relative_path, function in RESULT_ALLOWED:
        source = (ROOT / relative_path).read_text()
        tree = ast.parse(source)
        writes = [line for field in RESULT_FIELDS for line, _ in field_writes(source, field)
                  if _enclosing_function(tree, line) == function]
        assert writes, f"{relative_path}:{function} no longer writes a field of that name where the scan allows it"


def test_the_lifecycle_functions_are_where_the_scan_expects_them():
    # If they move or are renamed, the allow-list must follow, or the scan proves nothing.
    for relative_path, function in ALLOWED:
        source = (ROOT / relative_path).read_text()
        writes = [line for line, _ in status_writes(source) if _enclosing_function(ast.parse(source), line) == function]
        assert writes, f"{relative_path}:{function} no longer assigns status where the scan allows it"


SAMPLE = '''
from django.db import models


def sneaky_pause(instance):
    instance.status = "stopped"
    instance.save()


def sneaky_annotated(instance):
    instance.status: str = "stopped"


def sneaky_bulk(pk):
    LabletInstance.objects.filter(pk=pk).update(
        updated_at=now(),
        status="terminated",  # a comment with a ) in it
    )


def sneaky_create(definition):
    return Worker.objects.create(name="x", status="running")


def sneaky_dict(pk):
    Worker.objects.filter(pk=pk).update(**{"status": "failed"})


def sneaky_setattr(worker):
    setattr(worker, "status", "failed")


class Pausable(models.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.status = "paused"


class SimError(Exception):
    def __init__(self, status, description):
        self.status = status  # an HTTP status code, not domain state


class Poller:
    def tick(self):
        self.status = "running"


def innocent(instance, request):
    if instance.status == "running":
        pass
    Worker.objects.filter(status="running").count()
    LabletInstance.objects.create(definition=d, owner_id="s")
    digest.update(b"status=")
    Response(data, status=201)
    payload.update(extra)
    instance.cml_service_status = "available"
    Worker.objects.filter(pk=1).update(license_status="registered", status_changed_at=now())
    setattr(instance, stamp, now())
'''


def test_the_scan_catches_every_kind_of_status_write_and_nothing_else():
    offenders = forbidden_status_writes(SAMPLE, "apps/sample/services.py")
    functions = [entry.split(" in ")[1].split(":")[0] for entry in offenders]
    assert functions == [
        "sneaky_pause", "sneaky_annotated", "sneaky_bulk", "sneaky_create", "sneaky_dict", "sneaky_setattr",
        "__init__", "tick",
    ], offenders
    paused_line = SAMPLE.splitlines().index('        self.status = "paused"') + 1
    assert f":{paused_line} in __init__" in offenders[-2]  # the model's, not SimError's


LEASE_SAMPLE = '''
def sneaky_retry(pk):
    LabletInstance.objects.filter(pk=pk).update(attempts=0, next_attempt_at=None)


def sneaky_release(step):
    step.mine().update(claimed_until=None)


def sneaky_progress(instance):
    instance.lifecycle_step = "booting"


def innocent(pk, now):
    LabletInstance.objects.filter(claimed_until__lte=now, next_attempt_at__isnull=True).count()
    LabletInstance.objects.filter(pk=pk).exclude(lifecycle_step="x").update(last_error="")
'''


def test_the_lease_scan_catches_writes_of_every_lease_field_outside_the_lease_module():
    offenders = forbidden_lease_writes(LEASE_SAMPLE, "apps/lablets/engine/teardown.py")
    functions = sorted({entry.split(" in ")[1].split(":")[0] for entry in offenders})
    assert functions == ["sneaky_progress", "sneaky_release", "sneaky_retry"], offenders
    assert len(offenders) == 4  # attempts and next_attempt_at in one call: two writes
    assert forbidden_lease_writes(LEASE_SAMPLE, "apps/lablets/services/lease.py") == []


def test_the_scan_allows_writes_only_inside_the_allowed_function_of_the_allowed_file():
    source = "def worker_transition(worker, to):\n    worker.status = to\n"
    assert forbidden_status_writes(source, "apps/workers/services/fleet.py") == []
    assert forbidden_status_writes(source, "apps/workers/views.py") != []
    elsewhere = "def worker_start(worker):\n    worker.status = 'running'\n"
    assert forbidden_status_writes(elsewhere, "apps/workers/services.py") != []


RESULT_SAMPLE = '''
def sneaky_record_lab(step, lab_id):
    LabletInstance.objects.filter(pk=step.pk, cml_lab_id="").update(cml_lab_id=lab_id)


def sneaky_finish(step, console):
    step.mine().update(console=console, archive_key="x")


def sneaky_reason(instance):
    instance.termination_reason = "idle"
    instance.save(update_fields=["termination_reason"])


def sneaky_dict(pk, now):
    LabletInstance.objects.filter(pk=pk).update(**{"cml_lab_removed_at": now})


def sneaky_collect(pk, artifacts, now):
    LabletInstance.objects.filter(pk=pk).update(
        artifacts=artifacts,
        last_activity_at=now,
    )


def sneaky_notify(pk, now):
    setattr(instance, "expiring_notified_at", now)


def innocent(instance, now):
    LabletInstance.objects.filter(cml_lab_id="", cml_lab_removed_at__isnull=True).count()
    snapshot = {"cml_lab_id": instance.cml_lab_id, "termination_reason": instance.termination_reason}
    lablet_instance_record_console(instance_pk=instance.pk, claimed_until=now, console=[])
    if instance.archive_key == "":
        pass
'''


def test_the_result_scan_catches_writes_of_every_result_field_outside_the_lablet_services():
    offenders = forbidden_result_writes(RESULT_SAMPLE, "apps/lablets/engine/teardown.py")
    functions = sorted({entry.split(" in ")[1].split(":")[0] for entry in offenders})
    assert functions == ["sneaky_collect", "sneaky_dict", "sneaky_finish", "sneaky_notify", "sneaky_reason",
                         "sneaky_record_lab"], offenders
    assert len(offenders) == 8  # two fields in sneaky_finish's call and in sneaky_collect's: two writes each
    assert forbidden_result_writes(RESULT_SAMPLE, "apps/lablets/services/steps.py") == []


def test_the_engine_scan_catches_row_and_journal_writes_and_nothing_else():
    source = (
        "def step(instance, pk):\n"
        "    instance.save()\n"
        "    LabletInstance.objects.filter(pk=pk).update(last_error='')\n"
        "    audit_record(event_type='x')\n"
        "    instance_audit(instance, event_type='x', actor='a', action='x')\n"
        "    cml.cml_lab_delete(lab_id='x')\n"
        "    log.info('nothing to .update() here')\n"
        "    lablet_instance_record_archive(instance_pk=pk, archive_key='k')\n"
    )
    found = [entry.split(": ", 1)[1] for entry in engine_writes(source, "apps/lablets/engine/x.py")]
    assert found == [".save(", ".update(", "audit_record", "instance_audit"], found
