"""Students' browser consoles (issue 21): a student link's token, offered as the subprotocol
`labmanager.bearer.<token>`, opens the consoles of its own instance only, through the production servers to
a fake device console (simulators/console_device.py); another instance's console is 403, a revoked, expired
or ended link is refused and a revocation closes an open console (4403); the journal names the link's prefix,
never the token. docs/consoles.md#student-links, docs/security.md."""

import asyncio
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.lablets.services import lablet_instance_transition
from apps.lablets.services.student_links import student_link_create, student_link_revoke
from tests.events.conftest import server_process
from tests.events.test_console import (  # noqa: F401 - fixtures
    closed, connect, device, read_until, refused_status, running_instance, server, url_of)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_student_link_opens_its_instances_console_and_exchanges_lines(server, device):
    instance = running_instance(device)
    link, token = student_link_create(instance=instance, actor="tests")

    async def scenario():
        async with connect(url_of(server, instance), token) as ws:
            await read_until(ws, "router1>")
            await ws.send("show version\r")
            return await read_until(ws, "router1>")

    assert "Cisco IOS Software, router1" in asyncio.run(scenario())
    events = AuditEvent.objects.filter(resource_id=instance.public_id, event_type__startswith="console.")
    deadline = time.monotonic() + 10
    while events.count() < 2 and time.monotonic() < deadline:  # closed is written as the socket goes
        time.sleep(0.05)
    assert {event.actor for event in events} == {f"student-link:{link.prefix}"}
    used = AuditEvent.objects.get(resource_id=instance.public_id, event_type="student_link.used")
    assert used.metadata["address"] == "127.0.0.1"
    assert not any(token in str(row.metadata) + row.actor for row in AuditEvent.objects.all())


def test_a_student_token_is_refused_on_another_instances_console(server, device):
    mine, other = running_instance(device), running_instance(device)
    _, token = student_link_create(instance=mine, actor="tests")
    student_link_create(instance=other, actor="tests")

    async def scenario():
        refused = await refused_status(url_of(server, other), token)
        async with connect(url_of(server, mine), token) as ws:  # the same token opens its own
            await read_until(ws, "router1>")
        return refused

    assert asyncio.run(scenario()) == 403
    assert not AuditEvent.objects.filter(resource_id=other.public_id, event_type="console.opened").exists()


def test_a_revoked_link_closes_its_open_console_and_opens_no_other(server, device):
    instance = running_instance(device)
    _, token = student_link_create(instance=instance, actor="tests")

    async def scenario():
        async with connect(url_of(server, instance), token) as ws:
            await read_until(ws, "router1>")
            await asyncio.to_thread(student_link_revoke, instance=instance, actor="tests")
            code, messages = await closed(ws)
        return code, messages, await refused_status(url_of(server, instance), token)

    code, messages, again = asyncio.run(scenario())
    assert code == 4403 and "no longer valid" in messages[-1]["detail"]
    assert again == 403


def test_an_expired_or_ended_link_and_an_unknown_token_are_refused(server, device):
    instance = running_instance(device)
    _, expired = student_link_create(instance=instance, actor="tests",
                                     expires_at=timezone.now() - timedelta(minutes=1))
    ended_instance = running_instance(device)
    _, ended = student_link_create(instance=ended_instance, actor="tests")
    lablet_instance_transition(instance=ended_instance, to="terminated", actor="tests")

    async def scenario():
        return (await refused_status(url_of(server, instance), expired),
                await refused_status(url_of(server, ended_instance), ended),
                await refused_status(url_of(server, instance), "sl_not-a-student-token"))

    assert asyncio.run(scenario()) == (403, 403, 403)


def test_student_consoles_count_in_the_student_pages_rate_limit(django_db_setup, django_db_blocker, device):
    instance = running_instance(device)
    _, token = student_link_create(instance=instance, actor="tests")
    with server_process({"STUDENT_LINK_RATE_LIMIT": "2/min"}) as url:
        ws_url = url_of(url.replace("http://", "ws://"), instance)

        async def scenario():
            for _ in range(2):
                async with connect(ws_url, token) as ws:
                    await read_until(ws, "router1>")
            return await refused_status(ws_url, token)

        assert asyncio.run(scenario()) == 403
