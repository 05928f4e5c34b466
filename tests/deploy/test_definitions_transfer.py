"""export_definitions / import_definitions: moving lablet definitions between installations."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletDefinition
from apps.lablets.services import lablet_definition_create

pytestmark = pytest.mark.django_db

TOPOLOGY = "lab:\n  title: {title}\nnodes:\n  - id: n0\n    label: r1\n    node_definition: iosv\n"


def _create(name: str, version: str, *, title: str = "t", active: bool = True, ports=None) -> LabletDefinition:
    return lablet_definition_create(actor="test", data={
        "name": name, "version": version, "description": f"{name} {version}",
        "cml_lab_yaml": TOPOLOGY.format(title=title),
        "resource_requirements": {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10, "node_count": 1},
        "lifecycle": {"default_duration_minutes": 60, "max_duration_minutes": 90, "idle_timeout_minutes": 15},
        "port_definitions": ports or [], "is_active": active,
    })


def _export(tmp_path, *args) -> tuple[dict, str]:
    path = tmp_path / "definitions.json"
    err = StringIO()
    call_command("export_definitions", "--output", str(path), *args, stdout=StringIO(), stderr=err)
    return json.loads(path.read_text()), str(path)


def _import(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_definitions", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


COMPARED = ("name", "version", "description", "cml_lab_yaml", "content_hash", "cpu_cores", "memory_gb",
            "storage_gb", "node_count", "default_duration_minutes", "max_duration_minutes", "idle_timeout_minutes",
            "port_definitions", "is_active")


def _rows() -> list[tuple]:
    return [tuple(row) for row in LabletDefinition.objects.order_by("name", "version").values_list(*COMPARED)]


def test_an_export_imported_into_an_empty_installation_recreates_every_version(tmp_path):
    ports = [{"name": "console", "device_name": "r1", "console_type": "serial"}]
    _create("ccna-1", "1.0", title="a", ports=ports)
    _create("ccna-1", "1.1", title="b")
    _create("old-lab", "0.9", title="c", active=False)
    before = _rows()
    document, path = _export(tmp_path)
    assert [(d["name"], d["version"]) for d in document["definitions"]] == [("ccna-1", "1.0"), ("ccna-1", "1.1"),
                                                                           ("old-lab", "0.9")]
    LabletDefinition.objects.all().delete()  # the other installation: no definitions yet

    out, err = _import(path)

    assert _rows() == before
    assert out.split() == ["created", "ccna-1", "1.0", "created", "ccna-1", "1.1", "created", "old-lab", "0.9"]
    assert "3 created, 0 updated, 0 unchanged" in err
    assert AuditEvent.objects.filter(event_type="lablet_definition.created", actor="import_definitions").count() == 3


def test_importing_the_same_file_twice_changes_nothing_the_second_time(tmp_path):
    _create("ccna-1", "1.0")
    _, path = _export(tmp_path)
    before = _rows()
    events = AuditEvent.objects.count()

    out, err = _import(path)

    assert _rows() == before
    assert out.split() == ["unchanged", "ccna-1", "1.0"]
    assert AuditEvent.objects.count() == events  # nothing written, nothing journalled


def test_a_version_that_differs_here_stops_the_import_and_writes_nothing(tmp_path):
    _create("ccna-1", "1.0", title="theirs")
    _create("ccna-2", "1.0")
    document, path = _export(tmp_path)
    LabletDefinition.objects.all().delete()
    _create("ccna-1", "1.0", title="ours")  # same name and version, other topology

    with pytest.raises(CommandError, match=r"--update.*: ccna-1 1\.0 \(cml_lab_yaml\)$"):
        _import(path)

    assert list(LabletDefinition.objects.values_list("name", flat=True)) == ["ccna-1"]  # ccna-2 not created
    assert "ours" in LabletDefinition.objects.get().cml_lab_yaml


def test_update_overwrites_a_differing_version_and_records_the_change(tmp_path):
    _create("ccna-1", "1.0", title="theirs")
    _, path = _export(tmp_path)
    LabletDefinition.objects.all().delete()
    _create("ccna-1", "1.0", title="ours")

    out, _ = _import(path, "--update")

    assert out.split()[:3] == ["updated", "ccna-1", "1.0"]
    definition = LabletDefinition.objects.get()
    assert "theirs" in definition.cml_lab_yaml
    assert definition.content_hash == LabletDefinition.hash_yaml(definition.cml_lab_yaml)
    assert AuditEvent.objects.filter(event_type="lablet_definition.updated", resource_id=definition.public_id).exists()


def test_a_dry_run_reports_what_would_happen_and_writes_nothing(tmp_path):
    _create("ccna-1", "1.0")
    _, path = _export(tmp_path)
    LabletDefinition.objects.all().delete()

    out, err = _import(path, "--dry-run")

    assert out.split() == ["created", "ccna-1", "1.0"]
    assert err.startswith("Dry run, nothing written")
    assert not LabletDefinition.objects.exists()


def test_export_selects_by_name_and_leaves_deprecated_out_on_request(tmp_path):
    _create("ccna-1", "1.0")
    _create("ccna-2", "1.0", active=False)
    _create("ccna-3", "1.0")

    named, _ = _export(tmp_path, "--name", "ccna-1", "--name", "ccna-2")
    active, _ = _export(tmp_path, "--active-only")

    assert [d["name"] for d in named["definitions"]] == ["ccna-1", "ccna-2"]
    assert [d["name"] for d in active["definitions"]] == ["ccna-1", "ccna-3"]


def test_a_damaged_file_is_refused_with_every_problem_named(tmp_path):
    _create("ccna-1", "1.0")
    _create("ccna-2", "1.0")
    document, _ = _export(tmp_path)
    document["definitions"][0]["cml_lab_yaml"] += "# edited by hand\n"  # hash no longer matches
    document["definitions"][1]["resource_requirements"]["cpu_cores"] = 0
    document["definitions"].append(dict(document["definitions"][1], version="2.0", cml_lab_yaml="- not a mapping"))
    del document["definitions"][2]["content_hash"]
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(document))
    LabletDefinition.objects.all().delete()

    with pytest.raises(CommandError) as raised:
        _import(str(path))

    message = str(raised.value)
    assert "definitions[0] (ccna-1 1.0) content_hash: does not match cml_lab_yaml" in message
    assert "definitions[1] (ccna-2 1.0) resource_requirements.cpu_cores:" in message
    assert "definitions[2] (ccna-2 2.0) cml_lab_yaml:" in message
    assert not LabletDefinition.objects.exists()


@pytest.mark.parametrize("content, expected", [
    ("{not json", "Not JSON"),
    ('{"definitions": []}', "Not a lablet definitions export"),
    ('{"format": "labmanager.lablet-definitions", "format_version": 99, "definitions": []}',
     "Unsupported format_version 99"),
])
def test_a_file_that_is_not_an_export_is_refused_clearly(tmp_path, content, expected):
    path = tmp_path / "other.json"
    path.write_text(content)

    with pytest.raises(CommandError, match=expected):
        _import(str(path))


def test_a_missing_file_is_reported_without_a_traceback(tmp_path):
    with pytest.raises(CommandError, match="Cannot read .*nope.json: No such file"):
        _import(str(tmp_path / "nope.json"))
