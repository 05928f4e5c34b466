"""CML on each worker: the cml_health job, licence registration, placement rules — over real HTTP to the
CML simulator through the real virl2-client."""

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.core.encryption import encrypt
from apps.workers import tasks
from apps.workers.models import Worker
from apps.workers.selectors import worker_placeable_list
from apps.workers.services import worker_cml_health, worker_drain, worker_transition
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db


def running_worker(**kwargs) -> Worker:
    return worker_transition(worker=WorkerFactory(**kwargs), to="running", actor="tests")


def test_the_health_job_records_cml_status_licence_and_load(cml):
    worker = running_worker()
    summary = tasks.cml_health()
    worker.refresh_from_db()
    assert summary == {"checked": 1, "available": 1}
    assert worker.cml_service_status == "available"
    assert worker.license_status == "registered"
    assert worker.cml_version.startswith("2.10")
    assert worker.memory_total_gb and worker.memory_total_gb > 0
    assert worker.cpu_usage_percent is not None
    assert worker.last_cml_sync_at is not None
    assert worker.is_placeable


def test_the_health_job_skips_workers_that_are_not_running(cml):
    stopped = worker_transition(worker=WorkerFactory(), to="stopped", actor="tests")
    assert tasks.cml_health() == {"checked": 0, "available": 0}
    stopped.refresh_from_db()
    assert stopped.cml_service_status == "unknown"


def test_a_cml_that_is_down_makes_the_worker_unavailable_and_unplaceable(cml):
    worker = running_worker()
    worker_cml_health(worker=worker)
    cml.set_faults(down=True)
    worker = worker_cml_health(worker=worker)
    assert worker.cml_service_status == "unavailable"
    assert worker.cml_error
    assert not worker.is_placeable
    assert worker not in worker_placeable_list()
    change = AuditEvent.objects.filter(resource_id=worker.public_id, event_type="worker.cml_status_changed").last()
    assert change.metadata["after"]["cml_service_status"] == "unavailable"
    assert change.success is False


def test_an_expired_licence_is_reported(cml):
    worker = running_worker()
    cml.set_faults(license_expired=True)
    worker = worker_cml_health(worker=worker)
    assert worker.license_status == "expired"


def test_wrong_credentials_make_cml_unavailable_without_leaking_the_password(cml, settings):
    settings.CML_PASSWORD = "not-the-password"
    worker = worker_cml_health(worker=running_worker())
    assert worker.cml_service_status == "unavailable"
    assert "not-the-password" not in worker.cml_error


def test_a_slow_cml_is_unavailable_within_the_timeout(cml, settings):
    import time

    settings.CML_TIMEOUT_SECONDS = 0.5
    cml.set_faults(slow=2.0)
    started = time.monotonic()
    worker = worker_cml_health(worker=running_worker())
    assert time.monotonic() - started < 2.0
    assert worker.cml_service_status == "unavailable"


def test_an_unchanged_reading_writes_no_new_audit_row(cml):
    worker = running_worker()
    worker_cml_health(worker=worker)
    before = AuditEvent.objects.filter(event_type="worker.cml_status_changed").count()
    worker_cml_health(worker=worker)
    assert AuditEvent.objects.filter(event_type="worker.cml_status_changed").count() == before


def test_draining_or_stopped_workers_take_no_placements(cml):
    drained = running_worker()
    worker_cml_health(worker=drained)
    worker_drain(worker=drained, actor="tests")
    stopped = worker_transition(worker=WorkerFactory(), to="stopped", actor="tests")
    ok = running_worker()
    worker_cml_health(worker=ok)
    assert list(worker_placeable_list()) == [ok]
    assert not stopped.is_placeable


def test_licence_registration_and_deregistration_through_the_api(cml, operator_client):
    worker = running_worker()
    response = operator_client.delete(f"/api/workers/{worker.public_id}/license")
    assert response.status_code == 204, response.content
    worker.refresh_from_db()
    assert worker.license_status == "unregistered"
    response = operator_client.post(f"/api/workers/{worker.public_id}/license", {"token": "tok-123"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["license_status"] == "registered"
    assert "tok-123" not in response.content.decode()
    assert AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.license_register").exists()


def test_licensing_a_stopped_worker_is_a_conflict(cml, operator_client):
    worker = worker_transition(worker=WorkerFactory(), to="stopped", actor="tests")
    response = operator_client.post(f"/api/workers/{worker.public_id}/license", {"token": "t"}, format="json")
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"


def test_an_unreachable_cml_answers_502_on_licensing(cml, operator_client):
    worker = running_worker()
    cml.set_faults(down=True)
    response = operator_client.delete(f"/api/workers/{worker.public_id}/license")
    assert response.status_code == 502
    assert response.json()["trace_id"]


def test_the_api_shows_cml_state_but_never_credentials(cml, operator_client):
    worker = running_worker(cml_username="admin", cml_password_encrypted=encrypt("sim-password"))  # per worker
    response = operator_client.post(f"/api/workers/{worker.public_id}/sync")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["cml_service_status"] == "available"
    assert body["cml"]["version"].startswith("2.10")
    assert body["usage"]["memory_total_gb"] > 0
    assert body["placeable"] is True
    text = response.content.decode()
    assert "sim-password" not in text and "cml_password" not in text and "cml_username" not in text


def test_sync_workers_prints_a_table_of_workers(cml, ec2, capsys):
    worker = running_worker(name="table-worker")
    call_command("sync_workers")
    out = capsys.readouterr().out
    assert "table-worker" in out and worker.public_id in out
    assert "available" in out
