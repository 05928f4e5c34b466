"""The lablet definition pages in Debian's Chromium driven by Playwright, against a real server (bin/serve all)
serving the test database: an instructor creates a definition in the YAML editor, sees the server's error at its line
with everything typed kept, fixes it and lands on the new definition; then deprecates it.
Screenshots go to var/screenshots/ (docs/dashboard.md uses them)."""

from apps.lablets.models import LabletDefinition
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.factories import TOPOLOGY, LabletDefinitionFactory, LabletInstanceFactory

pytestmark = BROWSER_MARKS
expect = playwright_sync.expect

BROKEN = "lab:\n  title: OSPF basics\n  description: [unclosed\nnodes: []\n"
FIXED = "lab:\n  title: OSPF basics\n  description: two routers, one area\nnodes: []\n"


def test_an_instructor_creates_a_definition_fixing_the_yaml_the_server_refused(chromium, server, users):
    for version, active in (("1.0.0", False), ("1.1.0", True)):
        LabletDefinitionFactory(name="ccna-switching", version=version, is_active=active, node_count=4)
    bgp = LabletDefinitionFactory(name="bgp-peering", version="2.0", cpu_cores=8, memory_gb=16, node_count=6)
    LabletInstanceFactory.create_batch(3, definition=bgp, created_by=users["instructor"])

    page = log_in(chromium, server, "instructor")
    page.get_by_role("link", name="Definitions").click()
    expect(page.get_by_role("heading", name="Lablet definitions")).to_be_visible()
    page.get_by_label("Show deprecated").check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    shot(page, "definitions")

    page.get_by_role("link", name="New definition").click()
    page.get_by_label("Name", exact=True).fill("ospf-basics")
    page.get_by_label("Version").fill("1.0.0")
    page.get_by_label("Description").fill("Two routers, one area.")
    page.get_by_label("CPU cores").fill("2")
    page.get_by_label("Memory (GB)").fill("4")
    page.get_by_label("Storage (GB)").fill("10")
    page.get_by_label("Nodes").fill("2")
    editor = page.get_by_label("Topology (CML lab YAML)")
    editor.fill(BROKEN)
    expect(page.locator(".yaml-gutter span")).to_have_count(5)  # the line numbers follow the text

    page.get_by_role("button", name="Check YAML").click()  # validated on the server, nothing saved
    expect(page.locator("#yaml-errors")).to_contain_text("Invalid YAML at line 4")
    assert not LabletDefinition.objects.filter(name="ospf-basics").exists()

    page.get_by_role("button", name="Save").click()
    expect(page.locator("#yaml-errors")).to_contain_text("Invalid YAML at line 4")
    expect(page.locator(".yaml-gutter .bad")).to_have_text("4")  # the line the server pointed at
    assert editor.input_value() == BROKEN  # everything typed is kept
    assert page.get_by_label("Name", exact=True).input_value() == "ospf-basics"
    assert page.get_by_label("Memory (GB)").input_value() == "4"
    assert page.evaluate("document.activeElement.name") == "cml_lab_yaml"  # the caret waits at the error
    assert not LabletDefinition.objects.filter(name="ospf-basics").exists()
    shot(page, "definition-error")

    editor.fill(FIXED)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Created ospf-basics 1.0.0.")).to_be_visible()
    definition = LabletDefinition.objects.get(name="ospf-basics", version="1.0.0")
    assert definition.cml_lab_yaml == FIXED and definition.memory_gb == 4
    assert definition.created_by == users["instructor"]
    expect(page.locator("pre.yaml")).to_contain_text("two routers, one area")
    expect(page.locator(".feed")).to_contain_text("lablet_definition.created")
    shot(page, "definition-detail")

    page.once("dialog", lambda dialog: dialog.accept())  # the confirmation of data-confirm
    page.get_by_role("button", name="Deprecate").click()
    expect(page.get_by_text("it takes no new instances")).to_be_visible()
    expect(page.locator("h1 .badge")).to_have_text("deprecated")
    assert LabletDefinition.objects.get(pk=definition.pk).is_active is False
    page.context.close()


def test_an_operator_reads_definitions_without_the_editor(chromium, server, users):
    definition = LabletDefinitionFactory(name="read-only-lab", cml_lab_yaml=TOPOLOGY)
    page = log_in(chromium, server, "operator")
    page.get_by_role("link", name="Definitions").click()
    expect(page.get_by_role("link", name="New definition")).to_have_count(0)
    page.get_by_role("link", name="read-only-lab").click()
    expect(page.get_by_role("heading", name="Topology")).to_be_visible()
    expect(page.get_by_role("button", name="Deprecate")).to_have_count(0)
    assert page.goto(f"{server}/dashboard/definitions/{definition.public_id}/edit/").status == 403
    page.context.close()
