"""POST /lab waits for CML on the event loop: while labs boot, no thread is held by a waiting request.

The requests go through the whole Django stack with AsyncClient, on one event loop: every synchronous
step (DRF, transactions, single CML calls) runs on this test's thread, the one with the test's database
connection. A request that kept its thread during the wait would make the others queue behind it.
"""

import asyncio
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, RequestFactory

from apps.sessions.api import views
from apps.sessions.models import LabClaim, SessionLab
from apps.sessions.services import labs
from tests.factories import placeable_worker
from tests.sessions.conftest import BASE, TOPOLOGY, create, nothing_stored

pytestmark = pytest.mark.django_db

BOOT_SECONDS = 1.0


@pytest.fixture(autouse=True)
def _quick_polls(monkeypatch):
    monkeypatch.setattr(labs, "START_POLL_SECONDS", 0.05)


def _upload() -> dict:
    return {"topology": SimpleUploadedFile("two-routers.yaml", TOPOLOGY, content_type="application/yaml")}


def _post(client: AsyncClient, session_id: str):
    return client.post(f"{BASE}/lab", _upload(), headers={"X-Session-ID": session_id})


def _at_once(session_ids: list[str]) -> list:
    async def run():
        client = AsyncClient()
        return await asyncio.gather(*(_post(client, session_id) for session_id in session_ids))
    return async_to_sync(run)()


class BootSampler(threading.Thread):
    """Counts this process's threads while CML boots a lab (the requests' wait), leaving out the CML
    simulator's request handlers, and the most labs booting at once."""

    def __init__(self, cml):
        super().__init__(daemon=True)
        self.cml = cml
        self.stopping = threading.Event()
        self.samples = 0
        self.most_threads = 0
        self.most_booting = 0

    def run(self):
        while not self.stopping.is_set():
            booting = sum(lab["state"] == "STARTED" for lab in self.cml.summary()["labs"].values())
            self.most_booting = max(self.most_booting, booting)
            if booting:
                threads = [t for t in threading.enumerate() if "process_request_thread" not in t.name]
                self.most_threads = max(self.most_threads, len(threads))
                self.samples += 1
            time.sleep(0.01)

    def __enter__(self):
        self.before = threading.active_count()
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.join(5)


def test_labs_booting_on_many_workers_are_awaited_together_without_a_thread_each(anon, cml):
    count = 6
    for _ in range(count):
        placeable_worker(session_pool="default")
    sessions = [create(anon)["session_id"] for _ in range(count)]  # each active on its own worker
    cml.configure(boot_delay=BOOT_SECONDS)

    with BootSampler(cml) as sampler:
        responses = _at_once(sessions)

    assert [r.status_code for r in responses] == [200] * count, [r.content for r in responses]
    assert [r.json()["reused"] for r in responses] == [False] * count
    assert cml.calls["POST import"] == count
    assert SessionLab.objects.filter(status="running").count() == count
    # The waits overlapped on the one thread: labs booted side by side (a wait holding the thread would let the
    # next request start only once its lab had booted: one at a time).
    assert sampler.most_booting >= 2, sampler.most_booting
    # During the wait: this thread, the event loop's, the sampler and the simulator's; none per request.
    assert sampler.samples > 10 and sampler.most_threads <= sampler.before + 2, (sampler.before, sampler.most_threads)


def test_a_second_acquire_of_the_topology_being_started_waits_and_attaches(anon, worker, cml):
    session_id = create(anon)["session_id"]
    cml.configure(boot_delay=0.5)

    responses = _at_once([session_id, session_id])

    assert [r.status_code for r in responses] == [200, 200], [r.content for r in responses]
    assert [r.json()["reused"] for r in responses] == [False, True]
    assert responses[0].json()["devices"] == responses[1].json()["devices"]
    assert cml.calls["POST import"] == 1
    lab = SessionLab.objects.get(worker=worker)
    assert (lab.status, lab.ref_count, LabClaim.objects.count()) == ("running", 1, 1)


def test_a_client_that_goes_away_while_its_lab_boots_frees_the_slot_and_deletes_the_cml_lab(
        anon, worker, cml, storage_dir, teardowns_run_inline):
    session_id = create(anon)["session_id"]
    cml.configure(boot_delay=3600)

    async def leave_during_the_boot():
        request = asyncio.ensure_future(_post(AsyncClient(), session_id))
        while not await SessionLab.objects.filter(worker=worker, status="starting").exclude(cml_lab_id="").aexists():
            await asyncio.sleep(0.02)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    with teardowns_run_inline(execute=True):
        async_to_sync(leave_during_the_boot)()

    lab = SessionLab.objects.get(worker=worker)
    assert (lab.status, lab.ref_count, lab.cml_lab_id, LabClaim.objects.count()) == ("empty", 0, "", 0)
    assert cml.calls["POST import"] == 1 and cml.summary()["labs"] == {}  # the teardown deleted it
    assert nothing_stored(storage_dir)  # the upload was dropped


def test_a_client_that_goes_away_before_the_decision_is_awaited_gives_the_start_up(anon, worker, cml, storage_dir):
    session_id = create(anon)["session_id"]
    request = RequestFactory().post(f"{BASE}/lab", _upload(), headers={"X-Session-ID": session_id})

    async def leave_at_once():
        task = asyncio.ensure_future(views.lab_view(request))
        await asyncio.sleep(0)  # the view now waits for its DRF part, running in a thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async_to_sync(leave_at_once)()

    lab = SessionLab.objects.get(worker=worker)  # the DRF part decided to start it: given up, not started
    assert (lab.status, lab.ref_count, lab.start_token, LabClaim.objects.count()) == ("empty", 0, None, 0)
    assert cml.calls["POST import"] == 0
    assert nothing_stored(storage_dir)

