"""The lablet definition pages through Django's test client: who may open and change what (the API's
policy for definitions), the list (versions together, instance counts, constant queries), the detail, the
YAML editor (errors from the server next to their field, everything typed kept), new versions, deprecate /
reactivate, and sync from a lab on the CML simulator, a q task the page awaits (docs/dashboard.md)."""

import html as html_lib

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ, Task

from apps.audit.models import AuditEvent
from apps.lablets.views.definitions import next_version
from apps.lablets.models import LabletDefinition
from apps.workers import cml as cml_gateway
from apps.workers.services.cml import cml_credentials
from tests.awaited_support import posts_at_once, run_queued
from tests.factories import TOPOLOGY, LabletDefinitionFactory, LabletInstanceFactory, instance_in, placeable_worker

pytestmark = pytest.mark.django_db

LIST, NEW = "/dashboard/definitions/", "/dashboard/definitions/new/"
BROKEN_YAML = "lab:\n  title: [unclosed"


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def detail(definition) -> str:
    return f"{LIST}{definition.public_id}/"


def form_data(**overrides) -> dict:
    data = {"name": "ospf-basics", "version": "1.0.0", "description": "Two routers, one area.",
            "cml_lab_yaml": TOPOLOGY, "cpu_cores": "4", "memory_gb": "8", "storage_gb": "20", "node_count": "2",
            "default_duration_minutes": "90", "max_duration_minutes": "180", "idle_timeout_minutes": "20"}
    return {**data, **overrides}


def textarea_value(page: str) -> str:
    start = page.index(">", page.index('<textarea name="cml_lab_yaml"')) + 1
    return html_lib.unescape(page[start:page.index("</textarea>", start)]).removeprefix("\n")


@pytest.fixture
def roleless_user(db):
    return get_user_model().objects.create_user("nobody", password="pw-nobody")


# --- who may do what ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [LIST, NEW])
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = browser().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=" + path)


def test_the_sync_page_action_checks_who_asks_before_it_enqueues_anything(operator_user, roleless_user,
                                                                          no_cluster):
    definition = LabletDefinitionFactory(reference_lab_id="lab-1")
    path = detail(definition) + "sync"

    anonymous = browser().post(path)

    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/?next=" + path)
    assert browser(roleless_user).post(path).status_code == 403
    assert browser(operator_user).post(path).status_code == 403
    assert browser(operator_user).get(path).status_code == 405  # POST only
    assert OrmQ.objects.count() == 0


@pytest.mark.parametrize(
    ("who", "reads", "writes"),
    [("admin_user", 200, 200), ("instructor_user", 200, 200), ("operator_user", 200, 403),
     ("roleless_user", 403, 403)],
)
def test_every_role_reads_and_admins_and_instructors_write(request, instructor_user, who, reads, writes):
    definition = LabletDefinitionFactory(created_by=instructor_user)  # the instructor's (another's: test_definition_owners)
    client = browser(request.getfixturevalue(who))
    assert client.get(LIST).status_code == reads
    assert client.get(detail(definition)).status_code == reads
    for form_page in (NEW, detail(definition) + "edit/", detail(definition) + "new-version/"):
        assert client.get(form_page).status_code == writes
    assert client.post(detail(definition) + "deprecate").status_code == (302 if writes == 200 else 403)
    assert LabletDefinition.objects.get(pk=definition.pk).is_active is (writes != 200)


def test_an_operator_sees_no_actions_and_cannot_create(operator_user):
    definition = LabletDefinitionFactory()
    client = browser(operator_user)
    assert "New definition" not in client.get(LIST).content.decode()
    page = client.get(detail(definition)).content.decode()
    assert "Deprecate" not in page and "Sync from CML" not in page and "/edit/" not in page
    assert client.post(NEW, form_data()).status_code == 403
    assert client.post(detail(definition) + "sync", {"lab_id": "x"}).status_code == 403
    assert not LabletDefinition.objects.filter(name="ospf-basics").exists()


@pytest.mark.parametrize("who", ["admin_user", "operator_user", "instructor_user"])
def test_the_navigation_links_definitions_for_every_role(request, who):
    page = browser(request.getfixturevalue(who)).get("/dashboard/").content.decode()
    nav = page[page.index('<nav aria-label="Main">'):page.index("</nav>")]
    assert f'href="{LIST}">Definitions</a>' in nav


# --- the list -----------------------------------------------------------------------------------------

def test_the_list_keeps_the_versions_of_a_name_together_newest_first(admin_user):
    ospf_1 = LabletDefinitionFactory(name="ospf", version="1.0.0")
    LabletDefinitionFactory(name="bgp", version="1.0.0")
    ospf_2 = LabletDefinitionFactory(name="ospf", version="2.0.0", cpu_cores=6, memory_gb=12, node_count=3)
    LabletDefinitionFactory(name="acl", version="1.0.0")
    page = browser(admin_user).get(LIST).content.decode()
    rows = [page.index(f'data-definition="{d.public_id}"') for d in LabletDefinition.objects.all()]
    order = [d.name for _, d in sorted(zip(rows, LabletDefinition.objects.all()))]
    assert order == ["acl", "bgp", "ospf", "ospf"]
    assert page.index(ospf_2.public_id) < page.index(ospf_1.public_id)
    row = page[page.index(f'data-definition="{ospf_2.public_id}"'):]
    row = row[:row.index("</tr>")]
    assert "<td>6</td>" in row and "<td>12 GB</td>" in row and "<td>3</td>" in row and "status-active" in row


def test_the_list_hides_deprecated_versions_unless_asked_and_filters_by_name(admin_user):
    active = LabletDefinitionFactory(name="ospf-area", version="2.0.0")
    old = LabletDefinitionFactory(name="ospf-area", version="1.0.0", is_active=False)
    other = LabletDefinitionFactory(name="bgp-peering")
    client = browser(admin_user)
    default = client.get(LIST).content.decode()
    assert active.public_id in default and other.public_id in default and old.public_id not in default
    everything = client.get(LIST + "?deprecated=on").content.decode()
    assert old.public_id in everything and "status-deprecated" in everything
    named = client.get(LIST + "?name=OSPF&deprecated=on").content.decode()
    assert active.public_id in named and old.public_id in named and other.public_id not in named


def test_the_list_counts_the_instances_each_role_sees_and_links_them(admin_user, instructor_user, other_instructor):
    definition = LabletDefinitionFactory()
    LabletInstanceFactory.create_batch(2, definition=definition, created_by=instructor_user)
    LabletInstanceFactory(definition=definition, created_by=other_instructor)
    instance_in("terminated", definition=definition, created_by=instructor_user)  # the Instances list hides these

    def count_cell(user):
        page = browser(user).get(LIST).content.decode()
        row = page[page.index(f'data-definition="{definition.public_id}"'):]
        return row[:row.index("</tr>")]

    link = f'href="/dashboard/instances/?definition={definition.public_id}"'
    assert f"{link}>3</a>" in count_cell(admin_user)
    assert f"{link}>2</a>" in count_cell(instructor_user)
    listed = browser(instructor_user).get(f"/dashboard/instances/?definition={definition.public_id}").content.decode()
    assert listed.count('data-live-instance="') == 2


def _queries(client, path) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("who", ["admin_user", "instructor_user"])
def test_the_list_makes_as_many_queries_for_many_rows_as_for_few(request, who):
    user = request.getfixturevalue(who)
    client = browser(user)
    LabletInstanceFactory(definition=LabletDefinitionFactory(), created_by=user)
    _queries(client, LIST)  # warm caches (content types, session)
    few = _queries(client, LIST)
    for n in range(12):
        definition = LabletDefinitionFactory(name=f"many-{n % 4}", version=f"1.{n}")
        LabletInstanceFactory.create_batch(2, definition=definition, created_by=user)
    page = client.get(LIST).content.decode()
    assert page.count("data-definition=") == 13
    assert _queries(client, LIST) == few


# --- the detail ---------------------------------------------------------------------------------------

def test_the_detail_shows_the_definition_its_versions_instances_and_history(instructor_user):
    definition = LabletDefinitionFactory(name="vlan-lab", version="1.1.0", description="Trunks & access ports",
                                         cml_lab_yaml="lab:\n  title: <vlans>\nnodes: []\n", storage_gb=33,
                                         idle_timeout_minutes=17, created_by=instructor_user)
    older = LabletDefinitionFactory(name="vlan-lab", version="1.0.0", is_active=False)
    unrelated = LabletDefinitionFactory(name="other-lab")
    LabletInstanceFactory(definition=definition, created_by=instructor_user)
    client = browser(instructor_user)
    client.post(detail(definition) + "edit/", form_data(  # a change, for the history
        name="vlan-lab", version="1.1.0", description="Trunks & access ports", storage_gb="33", idle_timeout_minutes="17",
        cml_lab_yaml=definition.cml_lab_yaml))
    page = client.get(detail(definition)).content.decode()
    assert "Trunks &amp; access ports" in page and "33 GB" in page and "17 min" in page
    assert '<pre class="yaml"' in page and "title: &lt;vlans&gt;" in page  # escaped, read-only
    assert f'href="{detail(older)}">1.0.0</a>' in page and unrelated.public_id not in page
    assert f'href="/dashboard/instances/?definition={definition.public_id}" id="instances-link">1 instance</a>' in page
    assert "lablet_definition.updated" in page and "by instructor1" in page
    assert f'action="{detail(definition)}deprecate" data-confirm=' in page
    assert browser(instructor_user).get(f"{LIST}def-unknown/").status_code == 404


# --- the editor ---------------------------------------------------------------------------------------

def test_creating_a_definition_saves_it_through_the_service_and_opens_it(instructor_user):
    client = browser(instructor_user)
    response = client.post(NEW, form_data())
    definition = LabletDefinition.objects.get(name="ospf-basics", version="1.0.0")
    assert response.status_code == 302 and response["Location"] == detail(definition)
    assert (definition.cpu_cores, definition.memory_gb, definition.storage_gb, definition.node_count) == (4, 8, 20, 2)
    assert (definition.default_duration_minutes, definition.max_duration_minutes, definition.idle_timeout_minutes) == (90, 180, 20)
    assert definition.cml_lab_yaml == TOPOLOGY and definition.content_hash == LabletDefinition.hash_yaml(TOPOLOGY)
    assert definition.created_by == instructor_user
    assert AuditEvent.objects.filter(event_type="lablet_definition.created", resource_id=definition.public_id,
                                     actor="instructor1").exists()
    page = client.get(response["Location"]).content.decode()
    assert "Created ospf-basics 1.0.0." in page


def test_the_topology_is_stored_with_the_line_endings_of_the_file_not_the_browser(instructor_user):
    browser(instructor_user).post(NEW, form_data(cml_lab_yaml=TOPOLOGY.replace("\n", "\r\n")))
    definition = LabletDefinition.objects.get(name="ospf-basics")
    assert definition.cml_lab_yaml == TOPOLOGY and definition.content_hash == LabletDefinition.hash_yaml(TOPOLOGY)


def test_invalid_yaml_is_shown_next_to_the_editor_with_its_line_and_the_input_kept(instructor_user):
    typed = "# my lab\n" + BROKEN_YAML
    response = browser(instructor_user).post(NEW, form_data(cml_lab_yaml=typed, description="kept?"))
    page = response.content.decode()
    assert response.status_code == 422
    errors = page[page.index('id="yaml-errors"'):]
    assert "Invalid YAML at line 3, column 19" in errors[:errors.index("</div>")]
    assert 'data-error-line="3"' in page  # the editor's script marks that line
    assert textarea_value(page) == typed
    assert 'value="ospf-basics"' in page and "\nkept?</textarea>" in page and 'value="180"' in page
    assert not LabletDefinition.objects.exists()


def test_a_topology_that_is_not_a_mapping_is_refused_inline(instructor_user):
    response = browser(instructor_user).post(NEW, form_data(cml_lab_yaml="- just\n- a list\n"))
    assert response.status_code == 422
    assert "Expected a mapping at the top level." in response.content.decode()


def test_a_duplicate_name_and_version_is_a_conflict_shown_at_the_version(instructor_user):
    LabletDefinitionFactory(name="ospf-basics", version="1.0.0")
    response = browser(instructor_user).post(NEW, form_data(description="second try"))
    page = response.content.decode()
    assert response.status_code == 409
    assert ('<span class="error" id="id_version-error">A lablet definition named &#x27;ospf-basics&#x27; with '
            "version &#x27;1.0.0&#x27; already exists.</span>") in page
    assert "\nsecond try</textarea>" in page and textarea_value(page) == TOPOLOGY
    assert LabletDefinition.objects.count() == 1


def test_a_maximum_below_the_default_duration_is_refused_at_the_maximum(instructor_user):
    response = browser(instructor_user).post(NEW, form_data(default_duration_minutes="120", max_duration_minutes="60"))
    page = response.content.decode()
    assert response.status_code == 422
    assert '<span class="error" id="id_max_duration_minutes-error">Must be &gt;= default_duration_minutes.</span>' in page
    assert not LabletDefinition.objects.exists()


def test_missing_fields_are_refused_by_the_form_with_the_rest_kept(instructor_user):
    response = browser(instructor_user).post(NEW, form_data(name="", cpu_cores="0"))
    page = response.content.decode()
    assert response.status_code == 422
    assert 'id="id_name-error">This field is required.' in page and 'id="id_cpu_cores-error">' in page
    assert textarea_value(page) == TOPOLOGY and not LabletDefinition.objects.exists()


def test_check_yaml_validates_on_the_server_without_saving(instructor_user):
    client = browser(instructor_user)
    bad = client.post(NEW, {"check": "1", "name": "", "cml_lab_yaml": BROKEN_YAML})
    page = bad.content.decode()
    assert bad.status_code == 422
    assert "Invalid YAML at line 2, column 19" in page and textarea_value(page) == BROKEN_YAML
    assert "This field is required." not in page  # only the topology is judged
    good = client.post(NEW, {"check": "1", **form_data()})
    assert good.status_code == 200 and "The YAML is valid" in good.content.decode()
    assert 'value="ospf-basics"' in good.content.decode() and textarea_value(good.content.decode()) == TOPOLOGY
    assert not LabletDefinition.objects.exists()


def test_editing_prefills_the_form_and_saves_the_change(admin_user):
    definition = LabletDefinitionFactory(name="edit-me", version="3.1", node_count=5)
    client = browser(admin_user)
    page = client.get(detail(definition) + "edit/").content.decode()
    assert 'value="edit-me"' in page and 'value="3.1"' in page and textarea_value(page) == definition.cml_lab_yaml
    new_yaml = "lab:\n  title: edited\nnodes: []\n"
    response = client.post(detail(definition) + "edit/", form_data(name="edit-me", version="3.1", node_count="7",
                                                                  cml_lab_yaml=new_yaml))
    assert response.status_code == 302 and response["Location"] == detail(definition)
    definition.refresh_from_db()
    assert definition.node_count == 7 and definition.cml_lab_yaml == new_yaml
    assert definition.content_hash == LabletDefinition.hash_yaml(new_yaml)
    event = AuditEvent.objects.get(event_type="lablet_definition.updated", resource_id=definition.public_id)
    assert event.metadata["before"]["node_count"] == 5 and event.metadata["after"]["node_count"] == 7


def test_editing_into_an_existing_name_and_version_is_a_conflict(admin_user):
    LabletDefinitionFactory(name="taken", version="1.0")
    definition = LabletDefinitionFactory(name="mine", version="1.0")
    response = browser(admin_user).post(detail(definition) + "edit/", form_data(name="taken", version="1.0"))
    assert response.status_code == 409 and "already exists" in response.content.decode()
    definition.refresh_from_db()
    assert definition.name == "mine"


def test_invalid_yaml_in_an_edit_changes_nothing(admin_user):
    definition = LabletDefinitionFactory()
    response = browser(admin_user).post(detail(definition) + "edit/", form_data(
        name=definition.name, version=definition.version, cml_lab_yaml=BROKEN_YAML))
    assert response.status_code == 422 and "Invalid YAML at line 2" in response.content.decode()
    assert LabletDefinition.objects.get(pk=definition.pk).cml_lab_yaml == TOPOLOGY


def test_a_new_version_is_prefilled_and_created_beside_the_old_one(instructor_user):
    ports = [{"name": "r1", "device_name": "r1", "console_type": "serial"}]
    topology = "lab:\n  title: ccna\nnodes:\n  - id: n0\n    label: r1\n    node_definition: iosv\n"  # has r1
    source = LabletDefinitionFactory(name="ccna", version="1.0.0", node_count=6, port_definitions=ports,
                                     cml_lab_yaml=topology, direct_console_access=True)
    LabletDefinitionFactory(name="ccna", version="1.0.1")  # taken: the suggestion skips it
    client = browser(instructor_user)
    page = client.get(detail(source) + "new-version/").content.decode()
    assert 'value="ccna"' in page and 'value="1.0.2"' in page and 'value="6"' in page
    assert textarea_value(page) == source.cml_lab_yaml

    response = client.post(detail(source) + "new-version/",
                           form_data(name="ccna", version="1.0.2", node_count="6", cml_lab_yaml=topology))
    created = LabletDefinition.objects.get(name="ccna", version="1.0.2")
    assert response.status_code == 302 and response["Location"] == detail(created)
    assert created.port_definitions == ports and created.pk != source.pk
    assert created.direct_console_access
    source.refresh_from_db()
    assert source.is_active and source.version == "1.0.0"
    assert client.post(detail(source) + "new-version/",
                       form_data(name="ccna", version="1.0.0", cml_lab_yaml=topology)).status_code == 409


@pytest.mark.parametrize(("version", "taken", "suggested"), [
    ("1.0.9", [], "1.0.10"), ("v2", [], "v3"), ("2024.1-beta", ["2024.2-beta"], "2024.3-beta"), ("latest", [], ""),
])
def test_the_suggested_version_raises_the_last_number(version, taken, suggested):
    source = LabletDefinitionFactory(name="suggest", version=version)
    for other in taken:
        LabletDefinitionFactory(name="suggest", version=other)
    assert next_version(source) == suggested


# --- deprecate, reactivate, sync ----------------------------------------------------------------------

def test_deprecating_and_reactivating_go_through_the_service(instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    client = browser(instructor_user)
    response = client.post(detail(definition) + "deprecate")
    assert response.status_code == 302
    definition.refresh_from_db()
    assert definition.is_active is False
    page = client.get(detail(definition)).content.decode()
    assert "deprecated: it takes no new instances" in page and "Reactivate" in page
    assert definition.public_id not in client.get("/dashboard/instances/schedule/").content.decode()
    event = AuditEvent.objects.get(event_type="lablet_definition.updated", resource_id=definition.public_id)
    assert event.metadata["before"]["is_active"] is True and event.metadata["after"]["is_active"] is False

    client.post(detail(definition) + "reactivate")
    definition.refresh_from_db()
    assert definition.is_active is True
    assert client.get(detail(definition) + "deprecate").status_code == 405  # POST only
    assert client.put(NEW).status_code == 405


def test_every_form_needs_the_csrf_token(instructor_user):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(instructor_user)
    for path in (NEW, detail(definition) + "edit/", detail(definition) + "deprecate", detail(definition) + "sync"):
        assert client.post(path, form_data()).status_code == 403
    page = client.get(detail(definition)).content.decode()
    assert page.count('name="csrfmiddlewaretoken"') == 3  # log out, deprecate, sync
    assert LabletDefinition.objects.get(pk=definition.pk).is_active and LabletDefinition.objects.count() == 1


def _reference_lab(worker, title="reference") -> str:
    return cml_gateway.cml_lab_import(**cml_credentials(worker), topology_yaml=TOPOLOGY, title=title)


def _instance_lab(worker, user, lab_id=None) -> str:
    """A lab on `worker`'s CML held by a running instance `user` created: one `user` may sync from."""
    lab_id = lab_id or _reference_lab(worker)
    instance_in("running", worker=worker, cml_lab_id=lab_id, created_by=user)
    return lab_id


def test_sync_pulls_the_topology_from_a_lab_on_the_cml_simulator(instructor_user, ec2, cml, tasks_inline):
    worker = placeable_worker(name="cml-sync-1")
    definition = LabletDefinitionFactory(cml_lab_yaml="lab:\n  title: stale\nnodes: []\n", created_by=instructor_user)
    lab_id = _instance_lab(worker, instructor_user)
    client = browser(instructor_user)
    assert f'<option value="{worker.public_id}">' in client.get(detail(definition)).content.decode()

    response = client.post(detail(definition) + "sync", {"lab_id": lab_id, "worker": worker.public_id})

    assert response.status_code == 302
    # CML was asked by a q task (the page awaited it), not in the request
    assert Task.objects.filter(name=f"sync_definition-{definition.public_id}", success=True).count() == 1
    definition.refresh_from_db()
    assert definition.reference_lab_id == lab_id and definition.reference_worker == worker
    assert "nodes:" in definition.cml_lab_yaml and "stale" not in definition.cml_lab_yaml
    page = client.get(detail(definition)).content.decode()
    assert f"Synced from lab {lab_id} on cml-sync-1: the topology changed." in page
    assert "lablet_definition.synced" in page
    again = client.post(detail(definition) + "sync", {})  # blank: the reference lab
    assert again.status_code == 302
    assert "the topology is unchanged." in client.get(detail(definition)).content.decode()


def test_sync_without_a_reference_lab_asks_for_one_next_to_the_field(instructor_user, tasks_inline):
    definition = LabletDefinitionFactory(created_by=instructor_user)
    response = browser(instructor_user).post(detail(definition) + "sync", {"lab_id": ""})
    page = response.content.decode()
    assert response.status_code == 422
    assert '<span class="error">Required (the definition has no reference lab).</span>' in page


def test_sync_reports_an_unknown_lab_and_a_cml_outage_on_the_page(instructor_user, ec2, cml, tasks_inline):
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    _instance_lab(worker, instructor_user, lab_id="no-such-lab")  # an instance's lab that CML no longer has
    client = browser(instructor_user)
    unknown = client.post(detail(definition) + "sync", {"lab_id": "no-such-lab", "worker": worker.public_id})
    assert unknown.status_code == 422 and "Unknown lab on that worker&#x27;s CML." in unknown.content.decode()
    assert 'value="no-such-lab"' in unknown.content.decode()  # kept
    lab_id = _instance_lab(worker, instructor_user)
    cml.set_faults(down=True)
    down = client.post(detail(definition) + "sync", {"lab_id": lab_id, "worker": worker.public_id})
    assert down.status_code == 502 and 'id="sync-error"' in down.content.decode()
    assert LabletDefinition.objects.get(pk=definition.pk).content_hash == definition.content_hash


def test_sync_pages_await_their_tasks_together_without_a_thread_each(instructor_user, ec2, cml, no_cluster):
    worker = placeable_worker()
    definitions = [LabletDefinitionFactory(created_by=instructor_user) for _ in range(3)]
    for number, definition in enumerate(definitions):
        LabletDefinition.objects.filter(pk=definition.pk).update(
            reference_lab_id=_reference_lab(worker, f"ref-{number}"), reference_worker=worker)
    client = AsyncClient()
    client.force_login(instructor_user)

    seen = posts_at_once(client, [detail(d) + "sync" for d in definitions], other=detail(definitions[0]))

    assert seen["queued"] == 3 and seen["pending"] == 3, seen  # each awaits its task, none has answered
    assert seen["other"] == (200, 3), seen  # another page is served meanwhile
    assert seen["threads"] <= 1, seen
    assert seen["run"] == 3
    assert [(r.status_code, r["Location"]) for r in seen["responses"]] == [(302, detail(d)) for d in definitions]
    for definition in definitions:
        assert LabletDefinition.objects.get(pk=definition.pk).content_hash != definition.content_hash


def test_a_sync_refused_in_its_task_is_shown_on_the_page(instructor_user, no_cluster):
    definition = LabletDefinitionFactory(created_by=instructor_user)  # no reference lab: the task refuses (422)
    client = AsyncClient()
    client.force_login(instructor_user)

    seen = posts_at_once(client, [detail(definition) + "sync"], other=detail(definition))

    assert seen["queued"] == 1 and seen["pending"] == 1, seen
    response = seen["responses"][0]
    assert response.status_code == 422
    assert '<span class="error">Required (the definition has no reference lab).</span>' in response.content.decode()


def test_a_sync_no_cluster_runs_in_time_says_so_on_the_page_and_stays_queued(instructor_user, ec2, cml, no_cluster,
                                                                          settings):
    settings.LABLET_TASK_WAIT_SECONDS = 0.3
    worker = placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    lab_id = _instance_lab(worker, instructor_user)

    response = browser(instructor_user).post(detail(definition) + "sync", {"lab_id": lab_id, "worker": worker.public_id})

    page = response.content.decode()
    assert response.status_code == 502 and 'id="sync-error"' in page and "it is queued" in page
    assert run_queued() == 1  # the cluster runs it later: the sync is then done
    assert LabletDefinition.objects.get(pk=definition.pk).reference_lab_id == lab_id
