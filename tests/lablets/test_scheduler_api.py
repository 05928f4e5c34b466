"""The scheduler over HTTP: create-time admission (validation, overlap, quotas, `reserve`), extend,
roster bookings (`/api/lablet-instances/bulk`), the preview, the status and priorities."""

import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.models import InstanceStatus, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.lablets.services.scheduling import lablet_instances_schedule_pending
from apps.workers.models import Worker
from apps.workers.services import worker_drain, worker_transition
from tests.factories import LabletDefinitionFactory, LabletInstanceFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db

S = InstanceStatus
INSTANCES = "/api/lablet-instances"
BULK = "/api/lablet-instances/bulk"
PREVIEW = "/api/scheduler/preview"
STATUS = "/api/scheduler/status"
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "trace_id"}
# 08:00 UTC two days ahead: in the future, and a whole working day before midnight (per-day quotas).
BASE = (timezone.now() + timedelta(days=2)).astimezone(dt_timezone.utc).replace(hour=8, minute=0, second=0,
                                                                                  microsecond=0)


def at(hours: float) -> datetime:
    return BASE + timedelta(hours=hours)


def iso(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def worker(status="running", *, cpu=48, memory=192, storage=500, nodes=100, **fields) -> Worker:
    """A worker in `status` (through worker_transition) with this capacity; CML available unless told."""
    made = WorkerFactory(cpu_cores=cpu, memory_gb=memory, storage_gb=storage, max_nodes=nodes)
    if status != "pending":
        made = worker_transition(worker=made, to=status, actor="tests")
    Worker.objects.filter(pk=made.pk).update(**{"cml_service_status": "available", **fields})
    made.refresh_from_db()
    return made


def assert_problem(response, status, *, error_field=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_KEYS <= set(body)
    assert body["status"] == status
    assert body["instance"] == response.wsgi_request.path
    if error_field is not None:
        assert error_field in body.get("errors", {}), body
    return body


@pytest.fixture
def lab(instructor_user):
    """Needs 4 CPU, 8 GB, 50 GB, 5 nodes; 120 minutes by default, at most 240."""
    return LabletDefinitionFactory(created_by=instructor_user, cpu_cores=4, memory_gb=8, storage_gb=50, node_count=5,
                                   default_duration_minutes=120, max_duration_minutes=240)


def body(lab, owner="student-1", start=0, end=2, **extra) -> dict:
    return {"definition_id": lab.public_id, "owner_id": owner, "timeslot_start": iso(at(start)),
            "timeslot_end": iso(at(end)), **extra}


def create(client, lab, owner="student-1", start=0, end=2, **extra):
    return client.post(INSTANCES, body(lab, owner, start, end, **extra), format="json")


# --- create: admission at booking time --------------------------------------------------------------


def test_a_create_with_room_is_scheduled_at_once(instructor_client, lab):
    host = worker()

    response = create(instructor_client, lab, reserve=False)

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "scheduled"
    assert response.json()["worker_id"] == host.public_id
    assert response.json()["scheduled_at"] is not None


def test_a_create_without_room_is_a_pending_reservation_by_default(instructor_client, lab):
    worker(cpu=2)  # too small

    response = create(instructor_client, lab)

    assert response.status_code == 201, response.content
    assert (response.json()["status"], response.json()["worker_id"]) == ("pending", None)


def test_reserve_false_without_room_is_409_and_leaves_nothing(instructor_client, lab):
    worker(cpu=4)
    assert create(instructor_client, lab, "student-1").json()["status"] == "scheduled"
    audit_before = AuditEvent.objects.count()

    response = create(instructor_client, lab, "student-2", start=1, end=3, reserve=False)

    problem = assert_problem(response, 409)
    assert problem["reason"] == "no_capacity"
    assert "No worker has room" in problem["detail"] and "1 capacity" in problem["detail"]
    assert not LabletInstance.objects.filter(owner_id="student-2").exists()
    assert AuditEvent.objects.count() == audit_before + 1  # only the refusal (api_call.refused)


@pytest.mark.parametrize("case, field", [
    ("unknown definition", "definition_id"),
    ("deprecated definition", "definition_id"),
    ("start in the past", "timeslot_start"),
    ("end before start", "timeslot_end"),
    ("end equals start", "timeslot_end"),
    ("longer than the max duration", "timeslot_end"),
])
def test_create_time_validation_is_422_with_the_field(instructor_client, lab, case, field):
    worker()
    payload = body(lab)
    if case == "unknown definition":
        payload["definition_id"] = "def-0000000000000000"
    elif case == "deprecated definition":
        type(lab).objects.filter(pk=lab.pk).update(is_active=False)
    elif case == "start in the past":
        payload.update(timeslot_start=iso(timezone.now() - timedelta(hours=1)),
                       timeslot_end=iso(timezone.now() + timedelta(hours=1)))
    elif case == "end before start":
        payload["timeslot_end"] = iso(at(-1))
    elif case == "end equals start":
        payload["timeslot_end"] = payload["timeslot_start"]
    else:
        payload["timeslot_end"] = iso(at(4) + timedelta(minutes=1))

    problem = assert_problem(instructor_client.post(INSTANCES, payload, format="json"), 422, error_field=field)

    assert problem["title"] == "Unprocessable Entity"
    assert not LabletInstance.objects.exists()


def test_the_same_owner_cannot_hold_two_overlapping_instances(instructor_client, lab):
    worker()
    first = create(instructor_client, lab, "student-1", 0, 2).json()

    problem = assert_problem(create(instructor_client, lab, "student-1", 1, 3), 409)

    assert problem["conflicting_instance_id"] == first["id"]
    assert "overlapping" in problem["detail"]
    assert create(instructor_client, lab, "student-1", 2, 4).status_code == 201  # back to back is fine
    assert LabletInstance.objects.filter(owner_id="student-1").count() == 2


# --- quotas ------------------------------------------------------------------------------------------


def test_the_owner_live_quota(instructor_client, lab, settings):
    settings.QUOTA_OWNER_MAX_LIVE = 1
    assert create(instructor_client, lab, "student-1", 0, 2).status_code == 201

    problem = assert_problem(create(instructor_client, lab, "student-1", 3, 5), 409)

    assert (problem["quota"], problem["limit"], problem["current"]) == ("owner_max_live_instances", 1, 1)
    assert "the limit is 1" in problem["detail"]
    assert create(instructor_client, lab, "student-2", 3, 5).status_code == 201


def test_the_owner_minutes_per_day_quota(instructor_client, lab, settings):
    settings.QUOTA_OWNER_MAX_MINUTES_PER_DAY = 180
    assert create(instructor_client, lab, "student-1", 0, 2).status_code == 201

    problem = assert_problem(create(instructor_client, lab, "student-1", 3, 5), 409)

    assert (problem["quota"], problem["limit"], problem["current"]) == ("owner_max_minutes_per_day", 180, 120)
    assert create(instructor_client, lab, "student-1", 3, 4).status_code == 201  # 180 exactly
    assert create(instructor_client, lab, "student-1", 24, 26).status_code == 201  # the next day


def test_the_instructor_live_quota(instructor_client, other_instructor_client, lab, settings):
    settings.QUOTA_INSTRUCTOR_MAX_LIVE = 2
    for owner in ("student-1", "student-2"):
        assert create(instructor_client, lab, owner).status_code == 201

    problem = assert_problem(create(instructor_client, lab, "student-3"), 409)

    assert (problem["quota"], problem["limit"]) == ("instructor_max_live_instances", 2)
    assert "instructor instructor1" in problem["detail"]
    assert create(other_instructor_client, lab, "student-3").status_code == 201  # another instructor's own quota


def test_the_instructor_minutes_per_day_quota(instructor_client, instructor_user, lab, settings):
    settings.QUOTA_INSTRUCTOR_MAX_MINUTES_PER_DAY = 200
    created = create(instructor_client, lab, "student-1", 0, 2).json()

    problem = assert_problem(create(instructor_client, lab, "student-2", 0, 2), 409)

    assert (problem["quota"], problem["limit"]) == ("instructor_max_minutes_per_day", 200)
    # An instance cancelled before it ran gives its minutes back.
    lablet_instance_transition(instance=LabletInstance.objects.get(public_id=created["id"]), to=S.TERMINATED,
                               actor="tests")
    assert create(instructor_client, lab, "student-2", 0, 2).status_code == 201


# --- extend -------------------------------------------------------------------------------------------


def test_extend_is_allowed_when_the_worker_has_room(instructor_client, lab):
    host = worker(cpu=4)
    instance = create(instructor_client, lab, "student-1", 0, 2).json()
    assert instance["worker_id"] == host.public_id

    response = instructor_client.post(f"{INSTANCES}/{instance['id']}/extend", {"minutes": 60}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["timeslot_end"] == iso(at(3))


def test_extend_is_refused_when_the_worker_is_booked_after_the_slot(instructor_client, lab):
    worker(cpu=4)  # one at a time
    first = create(instructor_client, lab, "student-1", 0, 2).json()
    assert create(instructor_client, lab, "student-2", 2, 4).json()["status"] == "scheduled"

    response = instructor_client.post(f"{INSTANCES}/{first['id']}/extend", {"minutes": 30}, format="json")

    problem = assert_problem(response, 409)
    assert problem["reason"] == "capacity"
    assert "no room to extend" in problem["detail"] and "CPU cores" in problem["detail"]
    assert LabletInstance.objects.get(public_id=first["id"]).timeslot_end == at(2)


# --- bulk -------------------------------------------------------------------------------------------


def bulk_body(lab, owners, start=0, end=2, **extra) -> dict:
    return {"definition_id": lab.public_id, "owner_ids": owners, "timeslot_start": iso(at(start)),
            "timeslot_end": iso(at(end)), **extra}


def test_bulk_books_a_roster_of_200_owners_in_one_call(instructor_client, instructor_user, lab):
    # Room for 150 of them in the slot: the other 50 become pending reservations.
    host = worker(cpu=600, memory=10_000, storage=100_000, nodes=10_000)
    owners = [f"student-{n:03d}" for n in range(200)]

    started = time.monotonic()
    response = instructor_client.post(BULK, bulk_body(lab, owners), format="json")
    elapsed = time.monotonic() - started

    assert response.status_code == 201, response.content
    result = response.json()
    assert result["totals"] == {"requested": 200, "created": 200, "scheduled": 150, "pending": 50, "failed": 0}
    assert [row["owner_id"] for row in result["results"]] == owners
    assert all(row["ok"] and row["error"] is None for row in result["results"])
    assert [row["instance"]["status"] for row in result["results"]] == ["scheduled"] * 150 + ["pending"] * 50
    assert {row["instance"]["worker_id"] for row in result["results"][:150]} == {host.public_id}
    assert result["results"][0]["instance"]["created_by"] == instructor_user.username
    assert LabletInstance.objects.filter(created_by=instructor_user).count() == 200
    assert elapsed < 60, f"200 owners took {elapsed:.1f} s"  # ~40 ms of CPU per owner on the 2-core CI box


def test_bulk_reports_each_owner_and_keeps_the_others_when_one_fails(instructor_client, lab):
    worker()
    busy = create(instructor_client, lab, "student-busy", 1, 3).json()

    response = instructor_client.post(BULK, bulk_body(lab, ["student-a", "student-busy", "student-b"]), format="json")

    assert response.status_code == 200, response.content
    result = response.json()
    assert result["totals"] == {"requested": 3, "created": 2, "scheduled": 2, "pending": 0, "failed": 1}
    refused = result["results"][1]
    assert (refused["owner_id"], refused["ok"], refused["instance"]) == ("student-busy", False, None)
    assert refused["error"]["status"] == 409
    assert refused["error"]["title"] == "Conflict"
    assert refused["error"]["conflicting_instance_id"] == busy["id"]
    assert [row["ok"] for row in result["results"]] == [True, False, True]
    assert set(LabletInstance.objects.values_list("owner_id", flat=True)) == {"student-a", "student-b", "student-busy"}


def test_bulk_books_a_repeated_owner_once(instructor_client, lab):
    response = instructor_client.post(BULK, bulk_body(lab, ["student-a", "student-b", "student-a"]), format="json")

    assert response.status_code == 200, response.content
    result = response.json()
    assert [row["ok"] for row in result["results"]] == [True, True, False]
    assert result["results"][2]["error"]["status"] == 422
    assert result["results"][2]["error"]["title"] == "Duplicate owner"
    assert "first at index 0" in result["results"][2]["error"]["detail"]
    assert LabletInstance.objects.filter(owner_id="student-a").count() == 1


def test_bulk_without_reserve_refuses_the_owners_that_do_not_fit(instructor_client, lab):
    worker(cpu=8)  # two at a time

    response = instructor_client.post(BULK, bulk_body(lab, ["s1", "s2", "s3"], reserve=False), format="json")

    assert response.status_code == 200, response.content
    result = response.json()
    assert result["totals"] == {"requested": 3, "created": 2, "scheduled": 2, "pending": 0, "failed": 1}
    assert result["results"][2]["error"]["status"] == 409
    assert result["results"][2]["error"]["reason"] == "no_capacity"
    assert not LabletInstance.objects.filter(owner_id="s3").exists()


def test_bulk_all_or_nothing_rolls_everything_back_on_a_failure(instructor_client, lab):
    worker()
    create(instructor_client, lab, "student-busy", 1, 3)
    instances_before, audit_before = LabletInstance.objects.count(), AuditEvent.objects.count()
    owners = ["student-a", "student-busy", "student-b", "student-a"]

    response = instructor_client.post(BULK, bulk_body(lab, owners, all_or_nothing=True), format="json")

    problem = assert_problem(response, 409)
    assert "2 of 4 owner(s) could not be booked" in problem["detail"]
    assert "nothing was booked" in problem["detail"]
    assert problem["totals"] == {"requested": 4, "created": 0, "scheduled": 0, "pending": 0, "failed": 2}
    rows = problem["results"]
    assert [row["owner_id"] for row in rows] == owners
    assert all(row["ok"] is False and row["instance"] is None for row in rows)
    assert [row["error"]["title"] for row in rows] == ["Rolled back", "Conflict", "Rolled back", "Duplicate owner"]
    assert (LabletInstance.objects.count(), AuditEvent.objects.count()) == (instances_before, audit_before + 1)  # + the refusal


def test_bulk_all_or_nothing_books_everyone_when_all_fit(instructor_client, lab):
    worker()

    response = instructor_client.post(BULK, bulk_body(lab, ["s1", "s2"], all_or_nothing=True), format="json")

    assert response.status_code == 201, response.content
    assert response.json()["totals"]["created"] == 2
    assert response.json()["all_or_nothing"] is True
    assert LabletInstance.objects.filter(status=S.SCHEDULED).count() == 2


def test_bulk_replays_a_retry_with_the_same_idempotency_key(instructor_client, lab):
    payload = bulk_body(lab, ["s1", "s2"])

    first = instructor_client.post(BULK, payload, format="json", HTTP_IDEMPOTENCY_KEY="roster-1")
    second = instructor_client.post(BULK, payload, format="json", HTTP_IDEMPOTENCY_KEY="roster-1")

    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert LabletInstance.objects.count() == 2


def test_bulk_fails_the_whole_request_for_a_bad_definition_or_timeslot(instructor_client, lab):
    unknown = {**bulk_body(lab, ["s1"]), "definition_id": "def-0000000000000000"}
    assert_problem(instructor_client.post(BULK, unknown, format="json"), 422, error_field="definition_id")
    too_long = bulk_body(lab, ["s1"], end=5)
    assert_problem(instructor_client.post(BULK, too_long, format="json"), 422, error_field="timeslot_end")
    assert not LabletInstance.objects.exists()


@pytest.mark.parametrize("owners", [[], ["s1", ""], ["x" * 151], "s1"], ids=["empty", "blank", "too-long", "not-a-list"])
def test_bulk_validates_the_roster(instructor_client, lab, owners):
    problem = assert_problem(instructor_client.post(BULK, bulk_body(lab, owners), format="json"), 422)

    assert any(name.startswith("owner_ids") for name in problem["errors"]), problem
    assert not LabletInstance.objects.exists()


def test_bulk_takes_at_most_bulk_max_owners(instructor_client, lab, settings):
    settings.BULK_MAX_OWNERS = 3

    problem = assert_problem(instructor_client.post(BULK, bulk_body(lab, ["a", "b", "c", "d"]), format="json"), 422,
                             error_field="owner_ids")

    assert "At most 3 owners" in problem["errors"]["owner_ids"][0]


def test_bulk_is_for_instructors_and_admins(operator_client, admin_client, anon_client, lab):
    assert_problem(operator_client.post(BULK, bulk_body(lab, ["s1"]), format="json"), 403)
    assert_problem(anon_client.post(BULK, bulk_body(lab, ["s1"]), format="json"), 401)
    assert admin_client.post(BULK, bulk_body(lab, ["s1"]), format="json").status_code == 201


def test_bulk_is_not_taken_for_an_instance_id(instructor_client):
    assert_problem(instructor_client.get(BULK), 405)


# --- preview ------------------------------------------------------------------------------------------


def test_the_preview_answers_where_instances_would_land_and_why_not_elsewhere(operator_client, lab):
    host = worker(cpu=16, memory=64)
    draining = worker_drain(worker=worker(), actor="tests")
    small = worker(cpu=2)

    response = operator_client.post(PREVIEW, {"definition_id": lab.public_id, "timeslot_start": iso(at(0)),
                                              "count": 5}, format="json")

    assert response.status_code == 200, response.content
    preview = response.json()
    assert (preview["count"], preview["placeable"], preview["unplaceable"]) == (5, 4, 1)
    assert preview["timeslot_start"] == iso(at(0))
    assert preview["timeslot_end"] == iso(at(2)), "the definition's default duration"
    assert preview["policy"] == "best_fit"
    assert [p["worker_id"] for p in preview["placements"]] == [host.public_id] * 4 + [None]
    rows = {row["worker_id"]: row for row in preview["workers"]}
    assert rows[host.public_id]["placed"] == 4
    assert rows[host.public_id]["rejected"] is None
    assert rows[host.public_id]["utilisation_before"] == {"cpu_cores": 0.0, "memory_gb": 0.0, "storage_gb": 0.0,
                                                          "node_count": 0.0}
    assert rows[host.public_id]["utilisation_after"] == {"cpu_cores": 100.0, "memory_gb": 50.0, "storage_gb": 40.0,
                                                         "node_count": 20.0}
    assert rows[host.public_id]["full_after"]["reason"] == "capacity"
    assert rows[draining.public_id]["rejected"] == {"reason": "draining", "detail": "the worker is draining"}
    assert rows[draining.public_id]["utilisation_before"] is None
    assert rows[small.public_id]["rejected"]["reason"] == "capacity"
    assert rows[small.public_id]["rejected"]["detail"].startswith("CPU cores: needs 4, 2 free of 2")
    assert not LabletInstance.objects.exists()
    assert not AuditEvent.objects.filter(resource_type="lablet_instance").exists()


def test_the_preview_counts_booked_instances(instructor_client, lab):
    host = worker(cpu=8)
    create(instructor_client, lab, "student-1", 0, 2)

    preview = instructor_client.post(PREVIEW, {"definition_id": lab.public_id, "timeslot_start": iso(at(1)),
                                               "timeslot_end": iso(at(3)), "count": 2}, format="json").json()

    row = next(row for row in preview["workers"] if row["worker_id"] == host.public_id)
    assert row["utilisation_before"]["cpu_cores"] == 50.0
    assert row["placed"] == 1
    assert preview["unplaceable"] == 1


@pytest.mark.parametrize("case, field", [
    ("unknown definition", "definition_id"),
    ("deprecated definition", "definition_id"),
    ("end before start", "timeslot_end"),
    ("longer than the max duration", "timeslot_end"),
    ("in the past", "timeslot_start"),
    ("count 0", "count"),
    ("count 501", "count"),
])
def test_the_preview_refuses_bad_input(instructor_client, lab, case, field):
    payload = {"definition_id": lab.public_id, "timeslot_start": iso(at(0)), "timeslot_end": iso(at(2))}
    if case == "unknown definition":
        payload["definition_id"] = "def-0000000000000000"
    elif case == "deprecated definition":
        type(lab).objects.filter(pk=lab.pk).update(is_active=False)
    elif case == "end before start":
        payload["timeslot_end"] = iso(at(-1))
    elif case == "longer than the max duration":
        payload["timeslot_end"] = iso(at(5))
    elif case == "in the past":
        payload.update(timeslot_start=iso(timezone.now() - timedelta(days=1)),
                       timeslot_end=iso(timezone.now() - timedelta(days=1) + timedelta(hours=1)))
    else:
        payload["count"] = int(case.split()[1])

    assert_problem(instructor_client.post(PREVIEW, payload, format="json"), 422, error_field=field)


def test_the_preview_needs_credentials(anon_client, lab):
    assert_problem(anon_client.post(PREVIEW, {"definition_id": lab.public_id, "timeslot_start": iso(at(0))},
                                    format="json"), 401)


# --- status -------------------------------------------------------------------------------------------


def test_the_status_counts_the_queue_and_the_fleet(operator_client, instructor_client, lab):
    host = worker(cpu=4)
    worker_drain(worker=worker(), actor="tests")
    worker("stopped", cml_service_status="unknown")
    scheduled = create(instructor_client, lab, "student-1", 0, 2).json()
    assert scheduled["worker_id"] == host.public_id
    Worker.objects.exclude(pk=host.pk).update(draining=True)  # keep the rest from taking placements
    waiting = [create(instructor_client, lab, f"student-{n}", 0, 2).json() for n in (2, 3)]
    assert {w["status"] for w in waiting} == {"pending"}
    stale = LabletInstanceFactory(definition=lab, timeslot_start=timezone.now() - timedelta(hours=3),
                                  timeslot_end=timezone.now() - timedelta(hours=1))

    response = operator_client.get(STATUS)

    assert response.status_code == 200, response.content
    status = response.json()
    assert status["policy"] == "best_fit"
    assert (status["workers_total"], status["workers_usable"], status["workers_draining"],
            status["workers_stopped"]) == (3, 1, 2, 1)
    assert (status["queue_depth"], status["pending_reservations"], status["scheduled"], status["live"]) == (3, 2, 1, 4)
    assert status["placements_last_24h"] == 1
    assert status["oldest_pending_since"] == iso(LabletInstance.objects.get(
        public_id=waiting[0]["id"]).created_at)
    assert stale.status == S.PENDING
    assert instructor_client.get(STATUS).status_code == 200


def test_the_status_of_an_empty_fleet(admin_client, anon_client):
    status = admin_client.get(STATUS).json()

    assert (status["workers_total"], status["queue_depth"], status["oldest_pending_since"]) == (0, 0, None)
    assert_problem(anon_client.get(STATUS), 401)


# --- priority -----------------------------------------------------------------------------------------


def priority_url(instance) -> str:
    return f"{INSTANCES}/{instance.public_id}/priority"


def test_it_changes_a_pending_instances_priority(instructor_client, instructor_user):
    instance = instance_in("pending", created_by=instructor_user)

    response = instructor_client.patch(priority_url(instance), {"priority": 9}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["priority"] == 9
    assert response.json()["id"] == instance.public_id
    assert LabletInstance.objects.get(pk=instance.pk).priority == 9
    event = AuditEvent.objects.get(event_type="lablet_instance.priority_changed", resource_id=instance.public_id)
    assert event.metadata["before"] == {"priority": 5} and event.metadata["after"] == {"priority": 9}


def test_a_new_priority_changes_who_the_pass_places_first(instructor_client, lab):
    first = create(instructor_client, lab, "student-1").json()
    second = create(instructor_client, lab, "student-2").json()
    host = worker(cpu=4)
    second_instance = LabletInstance.objects.get(public_id=second["id"])
    assert instructor_client.patch(priority_url(second_instance), {"priority": 10}, format="json").status_code == 200

    lablet_instances_schedule_pending(actor="tests")

    assert LabletInstance.objects.get(public_id=second["id"]).worker_id == host.pk
    assert LabletInstance.objects.get(public_id=first["id"]).status == S.PENDING


@pytest.mark.parametrize("state", ["scheduled", "running", "terminated"])
def test_it_refuses_to_change_the_priority_of_an_instance_that_is_not_pending(instructor_client, instructor_user,
                                                                              state):
    instance = instance_in(state, created_by=instructor_user)

    problem = assert_problem(instructor_client.patch(priority_url(instance), {"priority": 9}, format="json"), 409)

    assert f"is {state}" in problem["detail"]
    assert LabletInstance.objects.get(pk=instance.pk).priority == 5


def test_it_hides_another_instructors_instance_from_a_priority_change(instructor_client, other_instructor):
    theirs = instance_in("pending", created_by=other_instructor)

    assert_problem(instructor_client.patch(priority_url(theirs), {"priority": 9}, format="json"), 404)
    assert_problem(instructor_client.patch(f"{INSTANCES}/inst-0000000000000000/priority", {"priority": 9},
                                           format="json"), 404)
    assert LabletInstance.objects.get(pk=theirs.pk).priority == 5


@pytest.mark.parametrize("payload", [{"priority": 0}, {"priority": 11}, {"priority": "high"}, {}])
def test_it_refuses_a_priority_out_of_range(instructor_client, instructor_user, payload):
    instance = instance_in("pending", created_by=instructor_user)

    assert_problem(instructor_client.patch(priority_url(instance), payload, format="json"), 422, error_field="priority")


def test_admins_change_any_priority_and_operators_none(admin_client, operator_client, other_instructor):
    theirs = instance_in("pending", created_by=other_instructor)

    assert_problem(operator_client.patch(priority_url(theirs), {"priority": 2}, format="json"), 403)
    assert admin_client.patch(priority_url(theirs), {"priority": 2}, format="json").json()["priority"] == 2


def test_the_status_counts_instances_completed_and_failed_today_in_one_query(operator_client):
    from freezegun import freeze_time
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.lablets.engine.ending import give_up
    from apps.lablets.services import lablet_instance_terminate

    midnight = timezone.now().astimezone(dt_timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    with freeze_time(midnight - timedelta(minutes=1)):  # yesterday (UTC): counted by neither
        lablet_instance_terminate(instance=instance_in("running"), actor="tests")
        give_up(instance_in("scheduled").pk, actor="tests", now=timezone.now(), error="instantiation: boom")
    with freeze_time(midnight + timedelta(seconds=1)):
        lablet_instance_terminate(instance=instance_in("running"), actor="tests")
        lablet_instance_terminate(instance=instance_in("pending"), actor="tests")
        give_up(instance_in("instantiating").pk, actor="tests", now=timezone.now(), error="instantiation: boom")
    instance_in("running")  # live: neither

    with CaptureQueriesContext(connection) as queries:
        status = operator_client.get(STATUS).json()

    assert (status["completed_today"], status["failed_today"]) == (2, 1)
    assert len([q for q in queries.captured_queries if "terminated_at" in q["sql"]]) == 1
