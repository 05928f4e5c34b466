"""The seed's Python `LabletClient` (lablet-cloud-manager-api.txt, "SDK & Client Libraries", Python), run as
published against the live server: `create_instance` books a lablet instance, `list_instances` finds it,
filtered by status too.

The class below is the seed's text verbatim; only its indentation is put back (the seed's page lost it). It
talks to pytest-django's live server (threaded WSGI, 127.0.0.1) over HTTP, with an instructor's API key as the
bearer token, exactly as an integrator would: base URL `…/api`, paths `/lablet-instances`."""

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from apps.identity.services import api_key_create
from apps.lablets.models import LabletInstance
from tests.factories import LabletDefinitionFactory, placeable_worker

pytestmark = pytest.mark.django_db(transaction=True)


# --- the seed's client, verbatim ------------------------------------------------------------------
class LabletClient:
    def __init__(self, base_url: str, token: str):
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"}
        )

    async def list_instances(self, status: str = None):
        params = {"status": status} if status else {}
        response = await self.client.get("/lablet-instances", params=params)
        response.raise_for_status()
        return response.json()

    async def create_instance(self, definition_id: str, owner_id: str,
                              timeslot_start: str, timeslot_end: str):
        response = await self.client.post("/lablet-instances", json={
            "definition_id": definition_id,
            "owner_id": owner_id,
            "timeslot_start": timeslot_start,
            "timeslot_end": timeslot_end,
        })
        response.raise_for_status()
        return response.json()
# --- end of the seed's client ---------------------------------------------------------------------


def test_the_seeds_python_client_books_and_lists_an_instance_unchanged(live_server, instructor_user):
    placeable_worker()
    definition = LabletDefinitionFactory(created_by=instructor_user)
    _, token = api_key_create(user=instructor_user, actor="tests")
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)

    async def scenario():
        client = LabletClient(f"{live_server.url}/api", token)
        try:
            created = await client.create_instance(definition.public_id, "student-42", start.isoformat(),
                                                   (start + timedelta(hours=1)).isoformat())
            listed = await client.list_instances()
            scheduled = await client.list_instances(status="scheduled")
            terminated = await client.list_instances(status="terminated")
        finally:
            await client.client.aclose()
        return created, listed, scheduled, terminated

    created, listed, scheduled, terminated = asyncio.run(scenario())

    assert created["owner_id"] == "student-42" and created["status"] == "scheduled"
    assert created["definition_id"] == definition.public_id
    assert LabletInstance.objects.get(public_id=created["id"]).created_by == instructor_user
    assert [i["id"] for i in listed["lablet_instances"]] == [created["id"]]
    assert [i["id"] for i in scheduled["lablet_instances"]] == [created["id"]]
    assert terminated["lablet_instances"] == []
