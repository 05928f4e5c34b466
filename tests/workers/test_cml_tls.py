"""TLS towards CML (the CML admin password crosses it): certificates are verified by default, against
CML_CA_BUNDLE or the system's CAs; a worker may opt out in the admin (journalled); plain http is refused
unless CML_ALLOW_HTTP. Over the wire: the CML simulator serving https with a self-signed certificate."""

import datetime
import ipaddress
import ssl

import pytest
from django.test import Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apps.audit.models import AuditEvent
from apps.workers.cml import CmlError, cml_system_status
from apps.workers.models import Worker
from apps.workers.services import worker_cml_health, worker_transition, worker_update_connection
from simulators.cml import CmlSimulator
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cml-simulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("cml-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_sim(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    simulator = CmlSimulator(username="admin", password="tls-secret-pw", ssl_context=context).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def https_cml(tls_sim, settings):
    tls_sim.reset()
    settings.CML_ALLOW_HTTP = False  # production's default: nothing here needs plain http
    return {"url": tls_sim.url, "username": "admin", "password": "tls-secret-pw"}


def _password_sent(sim) -> bool:
    return sim.calls["POST authenticate"] > 0


def test_an_unverifiable_certificate_is_refused_before_the_password_is_sent(https_cml, tls_sim):
    status = cml_system_status(**https_cml, timeout=5)
    assert status.cml_service_status == "unavailable"
    assert "CERTIFICATE_VERIFY_FAILED" in status.error or "certificate verify failed" in status.error
    assert not _password_sent(tls_sim)


def test_the_ca_bundle_setting_verifies_the_controller(https_cml, tls_sim, certificate, settings):
    settings.CML_CA_BUNDLE = str(certificate[0])
    status = cml_system_status(**https_cml, timeout=5)
    assert status.cml_service_status == "available", status.error


def test_an_unreadable_ca_bundle_is_an_error_not_a_silent_fallback(https_cml, settings, tmp_path):
    settings.CML_CA_BUNDLE = str(tmp_path / "missing.pem")
    with pytest.raises(CmlError) as caught:
        cml_system_status(**https_cml, timeout=5)
    assert caught.value.kind == CmlError.INSECURE


def test_a_worker_may_opt_out_of_verification(https_cml):
    status = cml_system_status(**https_cml, tls_verify=False, timeout=5)
    assert status.cml_service_status == "available", status.error


def test_plain_http_to_cml_is_refused_unless_allowed(cml, settings):
    settings.CML_ALLOW_HTTP = False
    with pytest.raises(CmlError) as caught:
        cml_system_status(url=cml.url, username="admin", password="sim-password", timeout=5)
    assert caught.value.kind == CmlError.INSECURE and "CML_ALLOW_HTTP" in str(caught.value)
    assert not cml.calls  # nothing was sent
    worker = worker_cml_health(worker=worker_transition(worker=WorkerFactory(), to="running", actor="tests"))
    assert worker.cml_service_status == "unavailable" and "plain http is refused" in worker.cml_error
    settings.CML_ALLOW_HTTP = True
    assert cml_system_status(url=cml.url, username="admin", password="sim-password", timeout=5).reachable


def _change_form(worker: Worker, **changes) -> dict:
    data = {"name": worker.name, "session_pool": worker.session_pool, "cpu_cores": worker.cpu_cores,
            "memory_gb": worker.memory_gb, "storage_gb": worker.storage_gb, "max_nodes": worker.max_nodes,
            "cml_url": worker.cml_url, "cml_username": worker.cml_username, "cml_password": ""}
    if worker.cml_tls_verify:
        data["cml_tls_verify"] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_the_opt_out_is_set_in_the_admin_shown_and_journalled(https_cml, tls_sim, admin_browser, settings):
    settings.CML_URL_OVERRIDE = ""  # the worker's own controller: the https simulator
    worker = worker_transition(worker=WorkerFactory(cml_url=tls_sim.url, cml_username="admin"), to="running",
                               actor="tests")
    # Its own password: a URL set on the worker gets no CML_PASSWORD (tests/workers/test_cml_password.py).
    worker = worker_update_connection(worker=worker, actor="tests", changes={"cml_password": "tls-secret-pw"})
    assert worker.cml_tls_verify is True  # the default
    assert worker_cml_health(worker=worker).cml_service_status == "unavailable"
    assert "certificate verify failed" in Worker.objects.get(pk=worker.pk).cml_error.lower()

    page = admin_browser.get(f"/admin/workers/worker/{worker.pk}/change/").content.decode()
    assert 'name="cml_tls_verify"' in page
    # Turning verification off clears the stored password unless it is entered again in the same change.
    response = admin_browser.post(f"/admin/workers/worker/{worker.pk}/change/",
                                 _change_form(worker, cml_tls_verify=None, cml_password="tls-secret-pw"))
    assert response.status_code == 302, response.content.decode()[:2000]
    worker.refresh_from_db()
    assert worker.cml_tls_verify is False
    event = AuditEvent.objects.filter(resource_id=worker.public_id, action="worker.update_connection").last()
    assert event.metadata["changed"] == ["cml_password", "cml_tls_verify"] and event.metadata["cml_tls_verify"] is False
    assert event.actor.startswith("admin")
    assert "cml_tls_verify" in admin_browser.get("/admin/workers/worker/").content.decode()  # a column and a filter

    assert worker_cml_health(worker=worker).cml_service_status == "available"
