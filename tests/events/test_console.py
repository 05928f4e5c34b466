"""Browser consoles (`/ws/lablet-instances/<id>/consoles/<name>`, apps/events/console.py) through the production
servers (bin/serve all: nginx, daphne), to a fake device console on a loopback port (simulators/console_device.py):
lines go both ways, telnet negotiation is answered and stripped, who may not see the instance gets 403, a forged
Origin is refused, idle consoles close, the limits refuse with their codes, teardown closes the console, and
the journal has console.opened / console.closed. docs/consoles.md, docs/security.md."""

import asyncio
import json
import time

import pytest
import websockets

from apps.audit.models import AuditEvent
from apps.lablets.models import ConsolePort, LabletInstance
from apps.lablets.services import lablet_instance_transition
from apps.workers.services.fleet import worker_transition
from simulators.console_device import ConsoleDevice
from tests.conftest import client_for
from tests.events.conftest import server_process
from tests.factories import LabletDefinitionFactory, WorkerFactory, instance_in

pytestmark = pytest.mark.django_db(transaction=True)

IDLE = 4.0  # the tight server's CONSOLE_IDLE_SECONDS


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with server_process({"LIVE_TAIL_INTERVAL": "0.2"}) as url:
        yield url.replace("http://", "ws://")


@pytest.fixture(scope="module")
def tight_server(django_db_setup, django_db_blocker):
    """Short idle time and small limits."""
    with server_process({"CONSOLE_IDLE_SECONDS": str(IDLE), "CONSOLE_MAX_PER_INSTANCE": "2",
                         "CONSOLE_MAX_PER_PROCESS": "3"}) as url:
        yield url.replace("http://", "ws://")


@pytest.fixture
def device():
    device = ConsoleDevice("router1").start()
    yield device
    device.stop()


def running_instance(*devices, created_by=None) -> LabletInstance:
    """A RUNNING instance with one console port definition per device (`console_1` serial, `console_2` telnet,
    ...), its console entries pointing at the devices and their ports held, as the engine leaves them."""
    worker = worker_transition(worker=WorkerFactory(aws_instance_id="", cml_service_status="available"),
                               to="running", actor="tests")
    kinds = ["serial", "telnet"] * len(devices)
    specs = [{"name": f"console_{i + 1}", "device_name": device.label, "console_type": kinds[i]}
             for i, device in enumerate(devices)]
    instance = instance_in("running", definition=LabletDefinitionFactory(port_definitions=specs), worker=worker,
                           created_by=created_by)
    console = [{**spec, "host": "127.0.0.1", "port": device.port} for spec, device in zip(specs, devices)]
    LabletInstance.objects.filter(pk=instance.pk).update(console=console)  # as the engine records it
    for spec, device in zip(specs, devices):
        ConsolePort.objects.create(worker=worker, port=device.port, instance=instance, name=spec["name"])
    return instance


def url_of(server, instance, name="console_1"):
    return f"{server}/ws/lablet-instances/{instance.public_id}/consoles/{name}"


def connect(url, key=None, origin="http://127.0.0.1"):
    protocols = ["labmanager.v1", f"labmanager.bearer.{key}"] if key else None
    return websockets.connect(url, origin=origin, subprotocols=protocols, open_timeout=10)


async def read_until(ws, text: str, timeout=10.0) -> str:
    """Device bytes (binary frames) until `text` appears; a text frame (a control message) fails the wait."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        assert isinstance(frame, bytes), f"control message {frame!r} while waiting for {text!r}"
        seen += frame.decode(errors="replace")
    return seen


async def closed(ws, timeout=15.0) -> tuple[int | None, list]:
    """The close code and the control messages before it (device bytes dropped)."""
    messages = []
    try:
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout)
            if isinstance(frame, str):
                messages.append(json.loads(frame))
    except websockets.exceptions.ConnectionClosed as done:
        return (done.rcvd.code if done.rcvd else None), messages


async def refused_status(url, key=None, origin="http://127.0.0.1") -> int:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect(url, key, origin):
            pass
    return refused.value.response.status_code


def test_an_instructor_exchanges_lines_with_the_device_and_the_journal_records_open_and_close(
        server, device, instructor_user):
    instance = running_instance(device, created_by=instructor_user)
    key = client_for(instructor_user).raw_key

    async def scenario():
        async with connect(url_of(server, instance), key) as ws:
            banner = await read_until(ws, "router1>")
            await ws.send("show version\r")
            version = await read_until(ws, "router1>")
            await ws.send("enable\r")
            enabled = await read_until(ws, "router1#")
            await ws.send("hello device\r")
            echoed = await read_until(ws, "router1#")
        return banner, version, enabled, echoed

    banner, version, enabled, echoed = asyncio.run(scenario())
    assert "router1 console" in banner and "\xff" not in banner  # the telnet negotiation is not shown
    assert "Cisco IOS Software, router1" in version
    assert "hello device" in echoed
    assert bytes(device.answers) == bytes((255, 253, 1, 255, 253, 3))  # DO ECHO, DO SGA
    events = AuditEvent.objects.filter(resource_id=instance.public_id, event_type__startswith="console.")
    deadline = time.monotonic() + 10
    while events.count() < 2 and time.monotonic() < deadline:  # closed is written as the socket goes
        time.sleep(0.05)
    opened, closed_row = events.order_by("pk")
    assert (opened.event_type, closed_row.event_type) == ("console.opened", "console.closed")
    assert opened.actor.startswith("instructor1 (apikey:")
    assert opened.metadata["port_name"] == "console_1" and opened.metadata["instance_id"] == instance.public_id
    assert closed_row.metadata["bytes_in"] == len("show version\renable\rhello device\r")
    assert closed_row.metadata["bytes_out"] > 0 and closed_row.metadata["duration_seconds"] > 0


def test_a_principal_who_may_not_see_the_instance_is_refused_with_403(server, device, instructor_user,
                                                                         other_instructor, operator_user):
    instance = running_instance(device, created_by=instructor_user)
    url = url_of(server, instance)
    other_key, operator_key = client_for(other_instructor).raw_key, client_for(operator_user).raw_key

    async def scenario():
        other = await refused_status(url, other_key)
        anonymous = await refused_status(url)
        bad_key = await refused_status(url, "lm_not-a-key")
        async with connect(url, operator_key) as ws:  # operators see every instance
            await read_until(ws, "router1>")
        return other, anonymous, bad_key

    assert asyncio.run(scenario()) == (403, 403, 403)


def test_a_forged_origin_is_refused(server, device, admin_user):
    instance = running_instance(device)
    key = client_for(admin_user).raw_key

    async def scenario():
        forged = await refused_status(url_of(server, instance), key, origin="https://evil.example")
        async with connect(url_of(server, instance), key) as ws:  # the same key from this site's origin opens
            await read_until(ws, "router1>")
        return forged

    assert asyncio.run(scenario()) == 403
    assert AuditEvent.objects.filter(event_type="console.opened").count() == 1


def test_a_console_that_is_not_running_is_closed_with_4404(server, device, admin_user):
    instance = running_instance(device)
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(url_of(server, instance, "no_such_port"), key) as ws:
            return await closed(ws)

    code, messages = asyncio.run(scenario())
    assert code == 4404 and "no running console 'no_such_port'" in messages[0]["detail"]


def test_the_consoles_close_at_the_instance_teardown(server, device, admin_user):
    switch = ConsoleDevice("switch1").start()
    instance = running_instance(device, switch)
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(url_of(server, instance), key) as first, \
                connect(url_of(server, instance, "console_2"), key) as second:
            await read_until(first, "router1>")
            await read_until(second, "switch1>")
            await asyncio.to_thread(lablet_instance_transition, instance=instance, to="stopping", actor="tests")
            return await closed(first), await closed(second)

    try:
        (code1, messages1), (code2, _) = asyncio.run(scenario())
        assert (code1, code2) == (4410, 4410)
        assert messages1[-1]["type"] == "closed" and "torn down" in messages1[-1]["detail"]
        deadline = time.monotonic() + 10
        while (device.open or switch.open) and time.monotonic() < deadline:  # LabManager closed its TCP ends
            time.sleep(0.05)
        assert device.open == switch.open == 0
    finally:
        switch.stop()


def test_an_idle_console_closes_after_the_setting(tight_server, device, admin_user):
    instance = running_instance(device)
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(url_of(tight_server, instance), key) as ws:
            await read_until(ws, "router1>")
            started = time.monotonic()
            code, messages = await closed(ws, timeout=IDLE * 5)
            return code, messages, time.monotonic() - started

    code, messages, after = asyncio.run(scenario())
    assert code == 4408 and "without input" in messages[-1]["detail"]
    assert IDLE - 1 <= after < IDLE * 5
    closed_row = AuditEvent.objects.filter(event_type="console.closed", resource_id=instance.public_id)
    deadline = time.monotonic() + 10
    while not closed_row.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed_row.get().metadata["close_code"] == 4408


def test_the_limits_per_instance_and_per_process_refuse_with_their_codes(tight_server, device, admin_user):
    first, second = running_instance(device), running_instance(device)  # (one fake device behind both)
    key = client_for(admin_user).raw_key

    async def scenario():
        async with connect(url_of(tight_server, first), key) as a, connect(url_of(tight_server, first), key) as b:
            await read_until(a, "router1>")
            await read_until(b, "router1>")
            async with connect(url_of(tight_server, first), key) as c:
                per_instance = await closed(c)
            async with connect(url_of(tight_server, second), key) as d:
                await read_until(d, "router1>")
                async with connect(url_of(tight_server, second), key) as e:
                    per_process = await closed(e)
        return per_instance, per_process

    (code1, messages1), (code2, messages2) = asyncio.run(scenario())
    assert code1 == 4429 and "its limit" in messages1[0]["detail"]
    assert code2 == 4503 and "its limit" in messages2[0]["detail"]
