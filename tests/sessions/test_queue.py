"""Queue semantics: strict FIFO per pool, as many active sessions as usable workers, positions kept
right as sessions leave from anywhere, promotion on delete and when a worker becomes usable, the
bound on the queue, and the wait estimate."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.sessions import selectors, services
from apps.sessions.models import Session, SessionPool
from apps.sessions.selectors import Principal
from apps.workers.models import Worker
from apps.workers.services.fleet import worker_transition
from apps.core.errors import NotFound
from tests.factories import placeable_worker
from tests.sessions.conftest import BASE, assert_problem, create, status_of

pytestmark = pytest.mark.django_db
ANON = Principal(user_id=None, actor="tests")


def _positions(client, ids) -> list[tuple[str, int]]:
    return [(b["status"], b["position"]) for b in (status_of(client, i).json() for i in ids)]


def test_positions_follow_arrival_order(anon, worker):
    ids = [create(anon)["session_id"] for _ in range(5)]

    assert _positions(anon, ids) == [("active", 0), ("waiting", 1), ("waiting", 2), ("waiting", 3), ("waiting", 4)]


def test_leaving_from_the_middle_moves_only_those_behind_up(anon, worker):
    ids = [create(anon)["session_id"] for _ in range(5)]

    anon.delete(f"{BASE}/session/{ids[2]}")

    assert _positions(anon, [ids[0], ids[1], ids[3], ids[4]]) == [
        ("active", 0), ("waiting", 1), ("waiting", 2), ("waiting", 3)]


def test_promotion_is_strictly_first_come_first_served(anon, worker):
    ids = [create(anon)["session_id"] for _ in range(4)]

    for expected_active in ids[1:]:
        active = Session.objects.get(status="active")
        anon.delete(f"{BASE}/session/{active.pk}")
        assert str(Session.objects.get(status="active").pk) == expected_active


def test_a_pool_has_as_many_active_sessions_as_usable_workers_each_on_its_own(anon, worker):
    others = [placeable_worker(session_pool="default") for _ in range(2)]
    placeable_worker(session_pool="other")  # another pool's worker is not ours
    placeable_worker()  # nor one in no pool

    bodies = [create(anon) for _ in range(5)]

    assert [b["position"] for b in bodies] == [0, 0, 0, 1, 2]
    active = Session.objects.filter(status="active")
    assert sorted(active.values_list("worker_id", flat=True)) == sorted([worker.pk] + [w.pk for w in others])


def test_ending_one_of_several_active_sessions_gives_its_worker_to_the_head(anon, worker):
    placeable_worker(session_pool="default")
    a, b, c, d = (create(anon)["session_id"] for _ in range(4))
    worker_of_b = Session.objects.get(pk=b).worker_id

    anon.delete(f"{BASE}/session/{b}")

    assert _positions(anon, [a, c, d]) == [("active", 0), ("active", 0), ("waiting", 1)]
    assert Session.objects.get(pk=c).worker_id == worker_of_b


def test_workers_that_are_not_usable_take_no_sessions(anon, ec2, cml):
    draining = placeable_worker(session_pool="default", draining=True)
    no_cml = placeable_worker(session_pool="default")
    Worker.objects.filter(pk=no_cml.pk).update(cml_service_status="unavailable")
    assert draining and no_cml

    assert create(anon)["position"] == 1


def test_a_worker_that_becomes_usable_is_given_out_when_the_queue_is_read(anon, ec2, cml, settings):
    settings.SESSION_SWEEP_INTERVAL_SECONDS = 0
    session_id = create(anon)["session_id"]
    assert status_of(anon, session_id).json()["status"] == "waiting"

    placeable_worker(session_pool="default")

    assert status_of(anon, session_id).json()["status"] == "active"


def test_a_stopped_worker_keeps_its_active_session_but_takes_no_new_one(anon, worker):
    first = create(anon)["session_id"]
    worker_transition(worker=worker, to="stopping", actor="tests")

    anon.delete(f"{BASE}/session/{first}")
    second = create(anon)

    assert second["position"] == 1


def test_a_full_queue_answers_503_with_retry_after(anon, worker, settings):
    settings.SESSION_QUEUE_MAX = 2
    create(anon), create(anon), create(anon)  # one active, two waiting

    response = anon.post(f"{BASE}/session")

    body = assert_problem(response, 503)
    assert int(response["Retry-After"]) >= 1
    assert body["queue_length"] == 2 and body["pool"] == "default"
    assert Session.objects.count() == 3


def test_pools_queue_independently(anon, worker):
    other = placeable_worker(session_pool="gpu")

    a, b = create(anon), create(anon, pool="gpu")
    c = create(anon, pool="gpu")

    assert (a["position"], b["position"], c["position"]) == (0, 0, 1)
    assert Session.objects.get(pk=b["session_id"]).worker_id == other.pk


def test_an_unknown_pool_is_422(anon, worker):
    assert "pool" in assert_problem(anon.post(f"{BASE}/session?pool=nope"), 422)["errors"]


def test_the_default_pool_exists_without_workers(anon, db):
    assert create(anon)["position"] == 1
    assert SessionPool.objects.filter(name="default").exists()


def test_the_wait_estimate_comes_from_recent_session_durations(anon, worker):
    first = create(anon)["session_id"]
    waiting = [create(anon)["session_id"] for _ in range(2)]
    assert status_of(anon, waiting[0]).json()["estimated_wait_seconds"] is None  # no history yet
    Session.objects.filter(pk=first).update(activated_at=timezone.now() - timedelta(seconds=120))

    anon.delete(f"{BASE}/session/{first}")  # active for 120 s

    pool = SessionPool.objects.get(name="default")
    assert pool.avg_session_seconds == pytest.approx(120, abs=2)
    assert status_of(anon, waiting[1]).json()["estimated_wait_seconds"] == pytest.approx(120, abs=2)


def test_a_position_read_is_two_queries_whatever_the_queue_length(anon, worker, django_assert_max_num_queries):
    for _ in range(30):
        services.session_create(principal=ANON)
    last = Session.objects.order_by("-ticket").first()
    SessionPool.objects.update(maintained_at=timezone.now())  # not due: reading must not scan anything

    with django_assert_max_num_queries(2):  # the session, the count of the waiting sessions ahead
        session = selectors.session_get_live(session_id=last.pk, principal=ANON)
        assert session.position == 29 and selectors.session_estimated_wait(session) is None


def test_positions_are_counted_in_one_query_for_a_list(anon, worker, django_assert_num_queries):
    for _ in range(6):
        services.session_create(principal=ANON)
    services.session_end(session_id=Session.objects.order_by("ticket")[2].pk, principal=ANON)  # leaves from the middle

    with django_assert_num_queries(1):
        listed = [(s.status, s.position) for s in selectors.with_positions(Session.objects.filter(
            status__in=["waiting", "active"]).order_by("ticket"))]

    assert listed == [("active", 0), ("waiting", 1), ("waiting", 2), ("waiting", 3), ("waiting", 4)]


def test_a_heartbeat_is_one_update(worker, django_assert_num_queries):
    session = services.session_create(principal=ANON)

    with django_assert_num_queries(1):
        services.session_heartbeat(session_id=session.pk, principal=ANON)


def test_heartbeats_touch_only_live_sessions_the_principal_may_see(db, settings):
    owner = Principal(user_id=None, actor="x")
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("hb-user")
    mine = Principal(user_id=user.pk, actor="hb-user")
    other = Principal(user_id=user.pk + 1000, actor="someone")
    staff = Principal(user_id=None, actor="op", privileged=True)
    anonymous, owned, ended = (services.session_create(principal=p) for p in (owner, mine, owner))
    services.session_end(session_id=ended.pk, principal=owner)
    old = timezone.now() - timedelta(seconds=60)
    Session.objects.update(last_seen_at=old)

    def answer(session_id, principal) -> bool:
        try:
            services.session_heartbeat(session_id=session_id, principal=principal)
        except NotFound:
            return False
        return True

    answers = [answer(*call) for call in [
        (anonymous.pk, owner), (owned.pk, owner), (str(owned.pk), mine), (owned.pk, other), (owned.pk, staff),
        (ended.pk, owner), ("not-a-uuid", owner), (anonymous.pk, mine)]]

    assert answers == [True, False, True, False, True, False, False, False]  # a user never touches an anonymous one
    seen = dict(Session.objects.values_list("pk", "last_seen_at"))
    assert seen[anonymous.pk] > old and seen[owned.pk] > old and seen[ended.pk] == old

