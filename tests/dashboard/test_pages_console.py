"""The instance page offers a browser console for each serial/telnet console entry of a running instance whose
port it holds, and none once it is torn down (docs/consoles.md)."""

import pytest

from apps.lablets.models import ConsolePort, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.services.fleet import worker_transition
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db


def test_the_instance_page_offers_a_console_per_serial_or_telnet_entry_while_the_lab_runs(client, admin_user):
    worker = worker_transition(worker=WorkerFactory(aws_instance_id=""), to="running", actor="tests")
    kinds = {"c1": "serial", "c2": "telnet", "c3": "vnc"}
    definition = LabletDefinitionFactory(port_definitions=[
        {"name": name, "device_name": "r1", "console_type": kind} for name, kind in kinds.items()])
    instance = instance_in("running", definition=definition, worker=worker)
    LabletInstance.objects.filter(pk=instance.pk).update(console=[
        {"name": name, "device_name": "r1", "console_type": kind, "host": "127.0.0.1", "port": 9000 + n}
        for n, (name, kind) in enumerate(kinds.items())])
    for n, name in enumerate(kinds):
        ConsolePort.objects.create(worker=worker, port=9000 + n, instance=instance, name=name)
    client.force_login(admin_user)
    page = client.get(f"/dashboard/instances/{instance.public_id}/").content.decode()
    prefix = f'data-console="/ws/lablet-instances/{instance.public_id}/consoles/'
    assert page.count(prefix) == 2 and f"{prefix}c1\"" in page and f"{prefix}c2\"" in page
    assert "vendor/xterm.js" in page

    lablet_instance_transition(instance=instance, to="stopping", actor="tests")
    page = client.get(f"/dashboard/instances/{instance.public_id}/").content.decode()
    assert prefix not in page and "vendor/xterm.js" not in page
