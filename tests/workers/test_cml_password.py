"""A worker's CML password: written in the admin (write-only field), stored encrypted, used to reach CML,
and never in a page, an API answer, a log line or the journal (grepped for below)."""

import importlib
import json
import logging

import pytest
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.core.encryption import decrypt
from apps.workers.models import Worker
from apps.workers.services import worker_cml_health, worker_transition
from simulators.cml import CmlSimulator
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db
SECRET = "Adm1n-CML-pw-7f3a9c"


@pytest.fixture
def admin_browser(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def own_cml(settings):
    """A CML controller whose password is SECRET and nothing else: reaching it proves the stored one is used."""
    with CmlSimulator(password=SECRET) as sim:
        settings.CML_URL_OVERRIDE, settings.CML_PASSWORD = sim.url, "not-the-password"
        yield sim


def _form(worker: Worker, **changes) -> dict:
    data = {"name": worker.name, "session_pool": worker.session_pool, "cpu_cores": worker.cpu_cores,
            "memory_gb": worker.memory_gb, "storage_gb": worker.storage_gb, "max_nodes": worker.max_nodes,
            "cml_url": worker.cml_url, "cml_username": worker.cml_username, "cml_password": "",
            "cml_tls_verify": "on", **changes}
    return data


def _stored(worker: Worker) -> str:
    with connection.cursor() as cursor:  # the column as the database holds it
        cursor.execute(f"SELECT cml_password_encrypted FROM {Worker._meta.db_table} WHERE id = %s", [worker.pk])
        return cursor.fetchone()[0]


def test_the_cml_password_is_write_only_encrypted_and_never_shown_logged_or_journalled(
        admin_browser, operator_client, own_cml, caplog):
    caplog.set_level(logging.DEBUG)
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    url = f"/admin/workers/worker/{worker.pk}/change/"
    response = admin_browser.post(url, _form(worker, cml_password=SECRET))
    assert response.status_code == 302, response.content.decode()[:3000]

    stored = _stored(worker)
    assert stored and SECRET not in stored and decrypt(stored) == SECRET  # encrypted at rest
    page = admin_browser.get(url).content.decode()
    assert SECRET not in page and stored not in page and "stored (encrypted)" in page
    assert worker_cml_health(worker=Worker.objects.get(pk=worker.pk)).cml_service_status == "available"  # CML took the decrypted one

    answers = [operator_client.get("/api/workers"), operator_client.get(f"/api/workers/{worker.public_id}"),
               operator_client.post(f"/api/workers/{worker.public_id}/sync")]
    for answer in answers:
        assert answer.status_code == 200
        assert SECRET not in answer.content.decode() and stored not in answer.content.decode()
    journal = json.dumps([list(row) for row in AuditEvent.objects.values_list()], default=str)
    assert "cml_password" in journal  # the change is journalled by name...
    assert SECRET not in journal and stored not in journal  # ...never by value
    assert SECRET not in caplog.text and stored not in caplog.text


def test_a_blank_password_keeps_the_stored_one_and_the_checkbox_clears_it(admin_browser, own_cml):
    worker = worker_transition(worker=WorkerFactory(), to="running", actor="tests")
    url = f"/admin/workers/worker/{worker.pk}/change/"
    admin_browser.post(url, _form(worker, cml_password=SECRET))
    stored = _stored(worker)
    assert admin_browser.post(url, _form(worker, name="renamed")).status_code == 302
    assert _stored(worker) == stored
    assert worker_cml_health(worker=Worker.objects.get(pk=worker.pk)).cml_service_status == "available"
    assert admin_browser.post(url, _form(worker, cml_password_clear="on")).status_code == 302
    assert _stored(worker) == ""  # settings.CML_PASSWORD applies again
    assert worker_cml_health(worker=Worker.objects.get(pk=worker.pk)).cml_service_status == "unavailable"


def test_the_migration_encrypts_plain_passwords_once():
    migration = importlib.import_module("apps.workers.migrations.0006_worker_cml_password_encrypted")
    from django.apps import apps

    plain = WorkerFactory()
    Worker.objects.filter(pk=plain.pk).update(cml_password_encrypted="legacy-plain-pw")
    none = WorkerFactory()
    migration.encrypt_plain_passwords(apps, None)
    token = _stored(plain)
    assert token != "legacy-plain-pw" and decrypt(token) == "legacy-plain-pw"
    assert _stored(none) == ""
    migration.encrypt_plain_passwords(apps, None)  # idempotent: a token is not encrypted again
    assert _stored(plain) == token


# --- the stored password goes only where it was entered for (issue 19) -------------------------------------

@pytest.fixture
def elsewhere():
    """Another host someone may point the worker at, which would accept the stored password."""
    with CmlSimulator(password=SECRET) as sim:
        yield sim


def _journalled(worker: Worker) -> dict:
    return AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.update_connection").last().metadata


def _own_url_worker(admin_browser, settings, own_cml) -> Worker:
    """A running worker whose URL and password were set by hand in the admin (the settings' URL unset)."""
    settings.CML_URL_OVERRIDE = ""
    worker = worker_transition(worker=WorkerFactory(cml_username="admin"), to="running", actor="tests")
    response = admin_browser.post(f"/admin/workers/worker/{worker.pk}/change/",
                                  _form(worker, cml_url=own_cml.url, cml_password=SECRET))
    assert response.status_code == 302, response.content.decode()[:3000]
    worker = Worker.objects.get(pk=worker.pk)
    assert worker_cml_health(worker=worker).cml_service_status == "available"
    return worker


def test_changing_the_cml_url_clears_the_stored_password_and_never_sends_it_to_the_new_host(
        admin_browser, settings, own_cml, elsewhere):
    worker = _own_url_worker(admin_browser, settings, own_cml)
    settings.CML_PASSWORD = SECRET  # nor does the fleet's password follow the URL (here: the same secret)

    response = admin_browser.post(f"/admin/workers/worker/{worker.pk}/change/", _form(worker, cml_url=elsewhere.url))

    assert response.status_code == 302
    assert _stored(worker) == ""
    metadata = _journalled(worker)
    assert metadata["changed"] == ["cml_password", "cml_url"] and metadata["cml_password_cleared"] is True
    assert SECRET not in json.dumps(metadata)
    checked = worker_cml_health(worker=Worker.objects.get(pk=worker.pk))
    assert checked.cml_service_status == "unavailable"
    assert elsewhere.calls["POST authenticate"] == 0  # no password of any kind reached the new host
    assert "password" in admin_browser.get(f"/admin/workers/worker/{worker.pk}/change/").content.decode()


def test_a_new_password_entered_with_the_new_url_is_kept(admin_browser, settings, own_cml, elsewhere):
    worker = _own_url_worker(admin_browser, settings, own_cml)

    response = admin_browser.post(f"/admin/workers/worker/{worker.pk}/change/",
                                  _form(worker, cml_url=elsewhere.url, cml_password=SECRET))

    assert response.status_code == 302
    assert decrypt(_stored(worker)) == SECRET
    assert "cml_password_cleared" not in _journalled(worker)
    assert worker_cml_health(worker=Worker.objects.get(pk=worker.pk)).cml_service_status == "available"


def test_turning_tls_verification_off_clears_the_stored_password(admin_browser, settings, own_cml):
    worker = _own_url_worker(admin_browser, settings, own_cml)
    form = _form(worker)
    del form["cml_tls_verify"]  # the checkbox unticked

    assert admin_browser.post(f"/admin/workers/worker/{worker.pk}/change/", form).status_code == 302

    assert _stored(worker) == ""
    assert _journalled(worker)["changed"] == ["cml_password", "cml_tls_verify"]
    calls = own_cml.calls["POST authenticate"]
    assert worker_cml_health(worker=Worker.objects.get(pk=worker.pk)).cml_service_status == "unavailable"
    assert own_cml.calls["POST authenticate"] == calls  # nothing sent over the unverified connection


def test_the_fleet_password_goes_only_to_the_url_the_settings_give(settings):
    with CmlSimulator(password="fleet-pw") as sim:
        settings.CML_URL_OVERRIDE, settings.CML_PASSWORD = "", "fleet-pw"
        settings.CML_URL_TEMPLATE = f"http://{{ip_address}}:{sim.port}"
        derived = worker_transition(worker=WorkerFactory(ip_address="127.0.0.1"), to="running", actor="tests")
        typed = worker_transition(worker=WorkerFactory(ip_address="127.0.0.1", cml_url=sim.url), to="running",
                                  actor="tests")

        assert worker_cml_health(worker=derived).cml_service_status == "available"  # the template's URL
        calls = sim.calls["POST authenticate"]
        assert worker_cml_health(worker=typed).cml_service_status == "unavailable"  # a URL set by hand
        assert sim.calls["POST authenticate"] == calls
