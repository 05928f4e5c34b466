"""The lablet REST contract (lablet-cloud-manager-api.txt), through the API with real API keys."""

import copy
import hashlib
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest

from apps.audit.models import AuditEvent
from apps.lablets.models import LabletDefinition, LabletInstance
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


DEFINITIONS = "/api/lablet-definitions"
INSTANCES = "/api/lablet-instances"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "trace_id"}

TOPOLOGY = """\
lab:
  title: python-networking-lab
  version: 0.2.2
nodes:
  - id: n0
    label: router1
    node_definition: iosv
links: []
"""

# The seed's "Create Lablet Definition" example, with a real topology instead of "...".
SEED_DEFINITION = {
    "name": "python-networking-lab",
    "version": "1.0.0",
    "description": "Basic Python networking exercises",
    "cml_lab_yaml": TOPOLOGY,
    "resource_requirements": {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 50, "node_count": 5},
    "lifecycle": {"default_duration_minutes": 120, "max_duration_minutes": 240, "idle_timeout_minutes": 30},
    "port_definitions": [{"name": "console_1", "device_name": "router1", "console_type": "serial"}],
}


def definition_body(**changes):
    body = copy.deepcopy(SEED_DEFINITION)
    body.update(changes)
    return body


def assert_problem(response, status, *, error_field=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_KEYS <= set(body)
    assert body["status"] == status
    assert body["instance"] == response.wsgi_request.path
    if error_field is not None:
        assert error_field in body["errors"], body
    return body


def iso(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.fixture
def definition(instructor_user):
    return LabletDefinitionFactory(created_by=instructor_user, default_duration_minutes=120, max_duration_minutes=240)


def mine(instructor_user, state="pending", **kwargs):
    return instance_in(state, created_by=instructor_user, **kwargs)


# --- definitions: create ----------------------------------------------------------------------


def test_it_creates_the_seed_definition(instructor_client):
    response = instructor_client.post(DEFINITIONS, SEED_DEFINITION, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("def-")
    for field in ("name", "version", "description", "cml_lab_yaml", "resource_requirements"):
        assert body[field] == SEED_DEFINITION[field]
    assert body["lifecycle"] == {**SEED_DEFINITION["lifecycle"], "keep_lab_until_slot_end": False}  # the default
    assert body["port_definitions"][0]["device_name"] == "router1"
    assert body["content_hash"] == hashlib.sha256(TOPOLOGY.encode()).hexdigest()
    assert body["is_active"] is True
    stored = LabletDefinition.objects.get(public_id=body["id"])
    assert (stored.cpu_cores, stored.node_count, stored.max_duration_minutes) == (4, 5, 240)
    assert AuditEvent.objects.filter(resource_id=body["id"], action="lablet_definition.create").count() == 1


def test_it_shows_a_created_definition(instructor_client):
    created = instructor_client.post(DEFINITIONS, SEED_DEFINITION, format="json").json()

    response = instructor_client.get(f"{DEFINITIONS}/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize("yaml_text", ["nodes: [unclosed", "lab: {title: x\n  bad: indentation", "- just\n- a list\n"])
def test_it_refuses_a_definition_whose_topology_is_not_a_yaml_mapping(instructor_client, yaml_text):
    response = instructor_client.post(DEFINITIONS, definition_body(cml_lab_yaml=yaml_text), format="json")

    assert_problem(response, 422, error_field="cml_lab_yaml")
    assert not LabletDefinition.objects.exists()


@pytest.mark.parametrize("field", ["cpu_cores", "memory_gb", "storage_gb", "node_count"])
@pytest.mark.parametrize("value", [0, -1])
def test_it_refuses_a_non_positive_resource_requirement(instructor_client, field, value):
    body = definition_body()
    body["resource_requirements"][field] = value

    response = instructor_client.post(DEFINITIONS, body, format="json")

    assert_problem(response, 422, error_field=f"resource_requirements.{field}")
    assert not LabletDefinition.objects.exists()


def test_it_refuses_a_max_duration_shorter_than_the_default(instructor_client):
    body = definition_body(lifecycle={"default_duration_minutes": 120, "max_duration_minutes": 60})

    response = instructor_client.post(DEFINITIONS, body, format="json")

    assert_problem(response, 422, error_field="lifecycle.max_duration_minutes")
    assert not LabletDefinition.objects.exists()


def test_it_refuses_a_definition_without_resource_requirements(instructor_client):
    body = definition_body()
    del body["resource_requirements"]

    assert_problem(instructor_client.post(DEFINITIONS, body, format="json"), 422, error_field="resource_requirements")


def test_it_refuses_a_duplicate_name_and_version(instructor_client):
    assert instructor_client.post(DEFINITIONS, SEED_DEFINITION, format="json").status_code == 201

    response = instructor_client.post(DEFINITIONS, definition_body(description="again"), format="json")

    assert_problem(response, 409)
    assert LabletDefinition.objects.count() == 1


def test_it_accepts_the_same_name_with_another_version(instructor_client):
    assert instructor_client.post(DEFINITIONS, SEED_DEFINITION, format="json").status_code == 201

    response = instructor_client.post(DEFINITIONS, definition_body(version="1.1.0"), format="json")

    assert response.status_code == 201
    assert LabletDefinition.objects.count() == 2


def test_it_refuses_definition_writes_by_operators(operator_client):
    assert_problem(operator_client.post(DEFINITIONS, SEED_DEFINITION, format="json"), 403)
    assert operator_client.get(DEFINITIONS).status_code == 200


def test_it_refuses_anonymous_requests(anon_client):
    response = anon_client.get(DEFINITIONS)

    assert_problem(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    bad_key = anon_client.get(INSTANCES, HTTP_X_API_KEY="lm_not-a-real-key")
    assert_problem(bad_key, 401)


# --- definitions: update, delete, sync --------------------------------------------------------


@pytest.fixture
def created_definition(instructor_client):
    response = instructor_client.post(DEFINITIONS, SEED_DEFINITION, format="json")
    assert response.status_code == 201
    return response.json()


def test_it_updates_only_the_fields_sent(instructor_client, created_definition):
    url = f"{DEFINITIONS}/{created_definition['id']}"

    response = instructor_client.put(url, {"description": "Revised exercises"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["description"] == "Revised exercises"
    for field in ("name", "version", "cml_lab_yaml", "resource_requirements", "lifecycle", "content_hash"):
        assert body[field] == created_definition[field]
    assert AuditEvent.objects.filter(resource_id=body["id"], action="lablet_definition.update").count() == 1


def test_it_updates_part_of_a_nested_group(instructor_client, created_definition):
    url = f"{DEFINITIONS}/{created_definition['id']}"

    response = instructor_client.put(
        url, {"resource_requirements": {"cpu_cores": 8}, "lifecycle": {"max_duration_minutes": 300}}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resource_requirements"] == {"cpu_cores": 8, "memory_gb": 8, "storage_gb": 50, "node_count": 5}
    assert body["lifecycle"] == {"default_duration_minutes": 120, "max_duration_minutes": 300, "idle_timeout_minutes": 30,
                                 "keep_lab_until_slot_end": False}


def test_it_rehashes_an_updated_topology(instructor_client, created_definition):
    new_yaml = TOPOLOGY.replace("iosv", "csr1000v")

    response = instructor_client.put(f"{DEFINITIONS}/{created_definition['id']}", {"cml_lab_yaml": new_yaml}, format="json")

    assert response.status_code == 200
    assert response.json()["content_hash"] == hashlib.sha256(new_yaml.encode()).hexdigest()


def test_it_refuses_an_update_that_breaks_the_lifecycle_limits(instructor_client, created_definition):
    url = f"{DEFINITIONS}/{created_definition['id']}"

    response = instructor_client.put(url, {"lifecycle": {"default_duration_minutes": 300}}, format="json")

    assert_problem(response, 422, error_field="lifecycle.max_duration_minutes")
    assert instructor_client.get(url).json()["lifecycle"] == created_definition["lifecycle"]


def test_it_refuses_an_update_with_invalid_yaml(instructor_client, created_definition):
    url = f"{DEFINITIONS}/{created_definition['id']}"

    assert_problem(instructor_client.put(url, {"cml_lab_yaml": "a: [b"}, format="json"), 422, error_field="cml_lab_yaml")
    assert instructor_client.get(url).json()["cml_lab_yaml"] == TOPOLOGY


def test_it_refuses_an_update_onto_an_existing_name_and_version(instructor_client, created_definition):
    other = instructor_client.post(DEFINITIONS, definition_body(version="2.0.0"), format="json").json()
    url = f"{DEFINITIONS}/{other['id']}"

    assert_problem(instructor_client.put(url, {"version": "1.0.0"}, format="json"), 409)
    assert instructor_client.get(url).json()["version"] == "2.0.0"


def test_it_answers_404_for_an_unknown_definition(instructor_client):
    assert_problem(instructor_client.get(f"{DEFINITIONS}/def-0000000000000000"), 404)
    assert_problem(instructor_client.put(f"{DEFINITIONS}/def-0000000000000000", {"description": "x"}, format="json"), 404)


def test_it_deletes_an_unused_definition(instructor_client, created_definition):
    url = f"{DEFINITIONS}/{created_definition['id']}"

    response = instructor_client.delete(url)

    assert response.status_code == 204
    assert not LabletDefinition.objects.filter(public_id=created_definition["id"]).exists()
    assert_problem(instructor_client.get(url), 404)
    assert AuditEvent.objects.filter(resource_id=created_definition["id"], action="lablet_definition.delete").count() == 1


@pytest.mark.parametrize("state", ["pending", "terminated"])
def test_it_refuses_to_delete_a_definition_an_instance_uses(instructor_client, definition, state):
    instance_in(state, definition=definition)

    assert_problem(instructor_client.delete(f"{DEFINITIONS}/{definition.public_id}"), 409)
    assert LabletDefinition.objects.filter(pk=definition.pk).exists()


def test_it_lists_definitions_in_an_envelope(instructor_client, created_definition):
    response = instructor_client.get(DEFINITIONS, {"name": "python-networking-lab"})

    assert response.status_code == 200
    body = response.json()
    assert [d["id"] for d in body["lablet_definitions"]] == [created_definition["id"]]
    assert (body["total"], body["limit"], body["offset"]) == (1, 50, 0)
    assert instructor_client.get(DEFINITIONS, {"name": "nope"}).json()["total"] == 0


# --- instances: create ------------------------------------------------------------------------


def seed_instance_body(definition_id):
    return {
        "definition_id": definition_id,
        "owner_id": "student-12345",
        "timeslot_start": "2030-01-20T09:00:00Z",
        "timeslot_end": "2030-01-20T11:00:00Z",
        "reservation_id": "res-ext-12345",
    }


def test_it_creates_the_seed_instance(instructor_client, instructor_user, definition):
    response = instructor_client.post(INSTANCES, seed_instance_body(definition.public_id), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"].startswith("inst-")
    assert body["status"] == "pending"
    assert body["definition_id"] == definition.public_id
    assert body["definition_name"] == definition.name
    assert body["owner_id"] == "student-12345"
    assert body["timeslot_start"] == "2030-01-20T09:00:00Z"
    assert body["timeslot_end"] == "2030-01-20T11:00:00Z"
    assert body["reservation_id"] == "res-ext-12345"
    assert body["created_by"] == instructor_user.username
    assert body["worker_id"] is None
    assert "created_at" in body
    stored = LabletInstance.objects.get(public_id=body["id"])
    assert stored.created_by == instructor_user
    assert AuditEvent.objects.filter(resource_id=body["id"], action="lablet_instance.create").count() == 1


def test_it_ignores_a_status_sent_on_create(instructor_client, definition):
    body = {**seed_instance_body(definition.public_id), "status": "running"}

    response = instructor_client.post(INSTANCES, body, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "pending"


def test_it_refuses_an_unknown_definition(instructor_client):
    response = instructor_client.post(INSTANCES, seed_instance_body("def-python-101"), format="json")

    assert_problem(response, 422, error_field="definition_id")
    assert not LabletInstance.objects.exists()


def test_it_refuses_a_deprecated_definition(instructor_client, definition):
    url = f"{DEFINITIONS}/{definition.public_id}"
    assert instructor_client.put(url, {"is_active": False}, format="json").status_code == 200

    response = instructor_client.post(INSTANCES, seed_instance_body(definition.public_id), format="json")

    assert_problem(response, 422, error_field="definition_id")
    assert not LabletInstance.objects.exists()


@pytest.mark.parametrize("end", ["2030-01-20T08:59:00Z", "2030-01-20T09:00:00Z"])
def test_it_refuses_a_timeslot_that_does_not_end_after_it_starts(instructor_client, definition, end):
    body = {**seed_instance_body(definition.public_id), "timeslot_end": end}

    assert_problem(instructor_client.post(INSTANCES, body, format="json"), 422, error_field="timeslot_end")
    assert not LabletInstance.objects.exists()


def test_it_refuses_a_timeslot_longer_than_the_max_duration(instructor_client, definition):
    body = {**seed_instance_body(definition.public_id), "timeslot_end": "2030-01-20T13:01:00Z"}  # 241 minutes

    assert_problem(instructor_client.post(INSTANCES, body, format="json"), 422, error_field="timeslot_end")
    assert not LabletInstance.objects.exists()


def test_it_accepts_a_timeslot_of_exactly_the_max_duration(instructor_client, definition):
    body = {**seed_instance_body(definition.public_id), "timeslot_end": "2030-01-20T13:00:00Z"}  # 240 minutes

    assert instructor_client.post(INSTANCES, body, format="json").status_code == 201


def test_it_defaults_the_timeslot_to_the_definition_duration(instructor_client):
    definition = LabletDefinitionFactory(default_duration_minutes=45, max_duration_minutes=90)
    body = seed_instance_body(definition.public_id)
    del body["timeslot_end"]

    response = instructor_client.post(INSTANCES, body, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["timeslot_end"] == "2030-01-20T09:45:00Z"


@pytest.mark.parametrize("missing", ["definition_id", "owner_id", "timeslot_start"])
def test_it_requires_the_core_instance_fields(instructor_client, definition, missing):
    body = seed_instance_body(definition.public_id)
    del body[missing]

    assert_problem(instructor_client.post(INSTANCES, body, format="json"), 422, error_field=missing)


def test_it_refuses_instance_creation_by_operators(operator_client, definition):
    assert_problem(operator_client.post(INSTANCES, seed_instance_body(definition.public_id), format="json"), 403)


# --- instances: lifecycle verbs -------------------------------------------------------------


def test_it_starts_collection_on_a_running_instance(instructor_client, instructor_user):
    instance = mine(instructor_user, "running")

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/start-collection")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "collecting"
    assert response.json()["collecting_at"] is not None
    assert LabletInstance.objects.get(pk=instance.pk).status == "collecting"


def test_it_starts_grading_on_a_collecting_instance(instructor_client, instructor_user):
    instance = mine(instructor_user, "collecting")

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/start-grading")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "grading"
    assert LabletInstance.objects.get(pk=instance.pk).status == "grading"


@pytest.mark.parametrize("state", ["pending", "running", "stopped"])
def test_it_terminates_an_instance(instructor_client, instructor_user, state):
    instance = mine(instructor_user, state)

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/terminate")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "terminated"
    assert response.json()["terminated_at"] is not None
    assert LabletInstance.objects.get(pk=instance.pk).status == "terminated"


@pytest.mark.parametrize(
    "verb,state",
    [
        ("start-collection", "pending"),
        ("start-collection", "grading"),
        ("start-grading", "running"),
        ("start-grading", "pending"),
        ("terminate", "terminated"),
    ],
)
def test_it_answers_409_to_a_verb_from_the_wrong_state(instructor_client, instructor_user, verb, state):
    instance = mine(instructor_user, state)
    events = AuditEvent.objects.count()

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/{verb}")

    body = assert_problem(response, 409)
    assert state in body["detail"]
    assert LabletInstance.objects.get(pk=instance.pk).status == state
    assert AuditEvent.objects.count() == events + 1  # only the refusal (api_call.refused)


# --- instances: extend ------------------------------------------------------------------------


def test_it_extends_by_minutes(instructor_client, instructor_user):
    instance = mine(instructor_user, "running")  # 120-minute slot, max 240

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", {"minutes": 30}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["timeslot_end"] == iso(instance.timeslot_end + timedelta(minutes=30))
    stored = LabletInstance.objects.get(pk=instance.pk)
    assert stored.timeslot_end == instance.timeslot_end + timedelta(minutes=30)
    assert AuditEvent.objects.filter(resource_id=instance.public_id, action="lablet_instance.extend").count() == 1


def test_it_extends_to_a_new_timeslot_end(instructor_client, instructor_user):
    instance = mine(instructor_user, "scheduled")
    new_end = instance.timeslot_start + timedelta(minutes=240)

    response = instructor_client.post(
        f"{INSTANCES}/{instance.public_id}/extend", {"timeslot_end": iso(new_end)}, format="json"
    )

    assert response.status_code == 200, response.content
    assert LabletInstance.objects.get(pk=instance.pk).timeslot_end == new_end


@pytest.mark.parametrize("body", [{"minutes": 121}, {"timeslot_end": "+241"}])
def test_it_refuses_extend_past_max_duration(instructor_client, instructor_user, body):
    instance = mine(instructor_user, "running")
    if "timeslot_end" in body:
        body = {"timeslot_end": iso(instance.timeslot_start + timedelta(minutes=241))}

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", body, format="json")

    assert_problem(response, 422, error_field="timeslot_end")
    assert LabletInstance.objects.get(pk=instance.pk).timeslot_end == instance.timeslot_end


def test_it_refuses_to_extend_to_an_earlier_end(instructor_client, instructor_user):
    instance = mine(instructor_user, "running")
    earlier = iso(instance.timeslot_end - timedelta(minutes=10))

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", {"timeslot_end": earlier}, format="json")

    assert_problem(response, 422, error_field="timeslot_end")


@pytest.mark.parametrize("state", ["terminated", "stopped", "archived"])
def test_it_refuses_to_extend_a_finished_instance(instructor_client, instructor_user, state):
    instance = mine(instructor_user, state)

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", {"minutes": 10}, format="json")

    assert_problem(response, 409)
    assert LabletInstance.objects.get(pk=instance.pk).timeslot_end == instance.timeslot_end


@pytest.mark.parametrize("body", [{}, {"minutes": 10, "timeslot_end": "2030-01-01T00:00:00Z"}])
def test_it_needs_exactly_one_of_minutes_or_timeslot_end(instructor_client, instructor_user, body):
    instance = mine(instructor_user, "running")

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", body, format="json")

    assert_problem(response, 422, error_field="minutes")
    assert LabletInstance.objects.get(pk=instance.pk).timeslot_end == instance.timeslot_end


@pytest.mark.parametrize("minutes", [0, -5])
def test_it_refuses_a_non_positive_extension(instructor_client, instructor_user, minutes):
    instance = mine(instructor_user, "running")

    response = instructor_client.post(f"{INSTANCES}/{instance.public_id}/extend", {"minutes": minutes}, format="json")

    assert_problem(response, 422, error_field="minutes")


# --- instances: lists -------------------------------------------------------------------------


def ids(response):
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["lablet_instances"]]


def test_it_lists_instances_in_an_envelope_with_pagination_headers(instructor_client, instructor_user):
    instances = [mine(instructor_user) for _ in range(5)]
    newest_first = [i.public_id for i in reversed(instances)]

    first = instructor_client.get(INSTANCES, {"limit": 2})
    body = first.json()
    assert set(body) == {"lablet_instances", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 0)
    assert ids(first) == newest_first[:2]
    assert first["X-Total-Count"] == "5"
    assert 'rel="next"' in first["Link"] and "offset=2" in first["Link"]
    assert 'rel="prev"' not in first["Link"]

    middle = instructor_client.get(INSTANCES, {"limit": 2, "offset": 2})
    assert ids(middle) == newest_first[2:4]
    assert 'rel="next"' in middle["Link"] and 'rel="prev"' in middle["Link"]

    last = instructor_client.get(INSTANCES, {"limit": 2, "offset": 4})
    assert ids(last) == newest_first[4:]
    assert 'rel="next"' not in last["Link"] and 'rel="prev"' in last["Link"]


def test_it_links_to_the_next_page_with_the_same_filters(instructor_client, instructor_user):
    for _ in range(3):
        mine(instructor_user, owner_id="student-a")

    link = instructor_client.get(INSTANCES, {"limit": 1, "owner_id": "student-a"})["Link"]
    next_url = next(part for part in link.split(", ") if 'rel="next"' in part).split(";")[0].strip("<>")

    assert "owner_id=student-a" in next_url
    assert instructor_client.get(next_url).json()["offset"] == 1


def test_it_filters_instances_by_comma_separated_status(instructor_client, instructor_user):
    pending = mine(instructor_user, "pending")
    running = mine(instructor_user, "running")
    mine(instructor_user, "scheduled")

    assert sorted(ids(instructor_client.get(INSTANCES, {"status": "pending,running"}))) == sorted(
        [pending.public_id, running.public_id]
    )
    assert ids(instructor_client.get(INSTANCES, {"status": "running"})) == [running.public_id]


def test_it_filters_instances_by_owner_definition_and_worker(instructor_client, instructor_user):
    worker = WorkerFactory()
    definition = LabletDefinitionFactory()
    by_owner = mine(instructor_user, owner_id="student-77")
    by_definition = mine(instructor_user, definition=definition)
    on_worker = mine(instructor_user, worker=worker)

    assert ids(instructor_client.get(INSTANCES, {"owner_id": "student-77"})) == [by_owner.public_id]
    assert ids(instructor_client.get(INSTANCES, {"definition_id": definition.public_id})) == [by_definition.public_id]
    assert ids(instructor_client.get(INSTANCES, {"worker_id": worker.public_id})) == [on_worker.public_id]
    assert ids(instructor_client.get(INSTANCES, {"worker_id": "worker-0000000000000000"})) == []


def test_it_hides_terminated_instances_unless_asked(instructor_client, instructor_user):
    live = mine(instructor_user, "running")
    gone = mine(instructor_user, "terminated")

    assert ids(instructor_client.get(INSTANCES)) == [live.public_id]
    assert instructor_client.get(INSTANCES).json()["total"] == 1
    assert sorted(ids(instructor_client.get(INSTANCES, {"include_terminated": "true"}))) == sorted(
        [live.public_id, gone.public_id]
    )
    assert ids(instructor_client.get(INSTANCES, {"status": "terminated"})) == [gone.public_id]


def test_it_sorts_instances_by_a_whitelisted_field(instructor_client, instructor_user):
    for owner in ("student-b", "student-c", "student-a"):
        mine(instructor_user, owner_id=owner)

    def owners(order):
        response = instructor_client.get(INSTANCES, {"sort": "owner_id", "order": order})
        assert response.status_code == 200
        return [row["owner_id"] for row in response.json()["lablet_instances"]]

    assert owners("asc") == ["student-a", "student-b", "student-c"]
    assert owners("desc") == ["student-c", "student-b", "student-a"]


@pytest.mark.parametrize(
    "params,field",
    [
        ({"sort": "definition__cml_lab_yaml"}, "sort"),
        ({"sort": "password"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_it_refuses_bad_list_parameters(instructor_client, params, field):
    assert_problem(instructor_client.get(INSTANCES, params), 422, error_field=field)


def test_it_accepts_the_largest_page(instructor_client):
    assert instructor_client.get(INSTANCES, {"limit": 1000}).json()["limit"] == 1000


# --- instances: who sees what -----------------------------------------------------------------


def test_it_hides_another_instructors_instance(instructor_client, instructor_user, other_instructor):
    own = mine(instructor_user)
    theirs = instance_in("running", created_by=other_instructor)

    assert ids(instructor_client.get(INSTANCES)) == [own.public_id]
    assert instructor_client.get(INSTANCES).json()["total"] == 1
    assert_problem(instructor_client.get(f"{INSTANCES}/{theirs.public_id}"), 404)
    assert ids(instructor_client.get(INSTANCES, {"owner_id": theirs.owner_id})) == []


def test_it_refuses_verbs_on_another_instructors_instance(instructor_client, other_instructor):
    theirs = instance_in("running", created_by=other_instructor)

    for verb in ("start-collection", "terminate"):
        assert_problem(instructor_client.post(f"{INSTANCES}/{theirs.public_id}/{verb}"), 404)
    assert_problem(instructor_client.post(f"{INSTANCES}/{theirs.public_id}/extend", {"minutes": 5}, format="json"), 404)
    assert LabletInstance.objects.get(pk=theirs.pk).status == "running"


def test_it_shows_every_instance_to_an_admin(admin_client, instructor_user, other_instructor):
    a = mine(instructor_user)
    b = instance_in("pending", created_by=other_instructor)
    c = LabletInstanceFactory()  # created by nobody (e.g. a job)

    assert sorted(ids(admin_client.get(INSTANCES))) == sorted([a.public_id, b.public_id, c.public_id])
    assert admin_client.get(f"{INSTANCES}/{b.public_id}").status_code == 200


def test_it_lets_an_admin_act_on_any_instance(admin_client, other_instructor):
    theirs = instance_in("running", created_by=other_instructor)

    response = admin_client.post(f"{INSTANCES}/{theirs.public_id}/terminate")

    assert response.status_code == 200
    assert response.json()["status"] == "terminated"


def test_it_shows_an_instance_with_its_worker(instructor_client, instructor_user):
    worker = WorkerFactory()
    instance = mine(instructor_user, "running", worker=worker)

    body = instructor_client.get(f"{INSTANCES}/{instance.public_id}").json()

    assert body["worker_id"] == worker.public_id
    assert body["running_at"] is not None
    assert body["status"] == "running"


def test_it_answers_404_for_an_unknown_instance(instructor_client):
    assert_problem(instructor_client.get(f"{INSTANCES}/inst-0000000000000000"), 404)
    assert_problem(instructor_client.post(f"{INSTANCES}/inst-0000000000000000/terminate"), 404)

