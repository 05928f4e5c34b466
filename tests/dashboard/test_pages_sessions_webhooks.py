"""The sessions and webhooks pages of the dashboard through Django's test client: who may open them, what
they show, and query counts that do not grow with the rows (docs/dashboard.md). Both pages only read, so
the rows are written directly as the services leave them."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookSubscription
from apps.sessions.models import LabClaim, Session, SessionLab, SessionPool, user_owner_key
from tests.factories import WorkerFactory

pytestmark = pytest.mark.django_db

SESSIONS, WEBHOOKS = "/dashboard/sessions/", "/dashboard/webhooks/"


def browser(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def a_pool(name="default", **fields) -> SessionPool:
    return SessionPool.objects.create(name=name, **fields)


def a_session(pool, *, status="waiting", position=None, owner=None, worker=None) -> Session:
    """A session as the queue service leaves it: the next ticket; waiting at the end of the queue, or active."""
    ticket = pool.next_ticket
    SessionPool.objects.filter(pk=pool.pk).update(next_ticket=ticket + 1)
    pool.next_ticket = ticket + 1
    now = timezone.now()
    if position is None:
        position = 0 if status == "active" else Session.objects.filter(pool=pool, status="waiting").count() + 1
    return Session.objects.create(pool=pool, ticket=ticket, status=status, position=position, owner=owner,
                                  owner_key=user_owner_key(owner.pk) if owner else "",
                                  worker=worker, actor=owner.get_username() if owner else "anonymous",
                                  created_at=now - timedelta(minutes=10), last_seen_at=now,
                                  activated_at=now if status == "active" else None)


def an_active_session_with_lab(pool, *, owner=None, worker_name=None, topology="two-routers",
                               devices=("r1", "r2")) -> Session:
    """An active session on its own worker (in the pool) holding a claim on the worker's running lab."""
    worker = WorkerFactory(aws_instance_id="", session_pool=pool.name,
                           **({"name": worker_name} if worker_name else {}))
    session = a_session(pool, status="active", owner=owner, worker=worker)
    lab = SessionLab.objects.create(worker=worker, status="running", topology_name=topology, ref_count=1,
                                    owner_key=session.lab_owner_key,
                                    topology_sha256="a" * 64, cml_lab_id="lab-1",
                                    devices=[{"name": name, "raw": {}} for name in devices])
    LabClaim.objects.create(session=session, lab=lab)
    return session


def a_subscription(url="https://hooks.example.test/lab", **fields) -> WebhookSubscription:
    return WebhookSubscription.objects.create(url=url, secret="s3cret", **fields)


def an_attempt(subscription, *, sequence_num, success=True, status_code=200, when=None) -> WebhookDeliveryAttempt:
    delivery = WebhookDelivery.objects.create(subscription=subscription, sequence_num=sequence_num,
                                              event_id=f"evt-{sequence_num}", event_type="io.lablet.worker.running",
                                              payload="{}", status="succeeded" if success else "pending", attempts=1)
    return WebhookDeliveryAttempt.objects.create(
        delivery=delivery, subscription=subscription, event_id=delivery.event_id, event_type=delivery.event_type,
        attempt=1, success=success, status_code=status_code, error="" if success else f"HTTP {status_code}",
        delivered_at=when or timezone.now())


def _queries(client, path) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.fixture
def roleless_user(db):
    return get_user_model().objects.create_user("nobody", password="pw-nobody")


# --- access ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [SESSIONS, WEBHOOKS])
def test_it_sends_anonymous_visitors_to_the_login_page(path):
    response = browser().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=" + path)


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("admin_user", {SESSIONS: 200, WEBHOOKS: 200}),
        ("operator_user", {SESSIONS: 200, WEBHOOKS: 403}),
        ("instructor_user", {SESSIONS: 200, WEBHOOKS: 403}),
        ("roleless_user", {SESSIONS: 403, WEBHOOKS: 403}),
    ],
)
def test_sessions_are_for_every_role_and_webhooks_for_admins_only(request, who, expected):
    client = browser(request.getfixturevalue(who))
    assert {path: client.get(path).status_code for path in expected} == expected


@pytest.mark.parametrize(
    ("who", "links", "absent"),
    [
        ("instructor_user", ["Sessions"], ["Webhooks"]),
        ("operator_user", ["Sessions"], ["Webhooks"]),
        ("admin_user", ["Sessions", "Webhooks"], []),
    ],
)
def test_the_navigation_links_the_pages_the_role_may_open(request, who, links, absent):
    html = browser(request.getfixturevalue(who)).get(SESSIONS).content.decode()
    nav = html[html.index('<nav aria-label="Main">'):html.index("</nav>")]
    assert all(f">{label}</a>" in nav for label in links)
    assert not any(f">{label}</a>" in nav for label in absent)


@pytest.mark.parametrize("path", [SESSIONS, WEBHOOKS])
def test_the_pages_only_read(admin_user, path):
    assert browser(admin_user).post(path).status_code == 405


# --- sessions -------------------------------------------------------------------------------------------

def test_an_instructor_sees_only_their_own_sessions(instructor_user, other_instructor):
    pool = a_pool()
    mine = a_session(pool, owner=instructor_user)
    theirs = a_session(pool, owner=other_instructor)
    anonymous = a_session(pool)
    my_active = an_active_session_with_lab(pool, owner=instructor_user, worker_name="cml-mine")
    their_active = an_active_session_with_lab(pool, owner=other_instructor, worker_name="cml-theirs")
    html = browser(instructor_user).get(SESSIONS).content.decode()
    assert str(mine.id) in html and str(my_active.id) in html and "cml-mine" in html
    assert str(theirs.id) not in html and str(anonymous.id) not in html
    assert str(their_active.id) not in html and "cml-theirs" not in html
    assert "1 waiting · 1 active" in html  # the counts are theirs too


def test_operators_see_every_session_of_every_pool(operator_user, instructor_user):
    first, second = a_pool("default"), a_pool("ccna")
    sessions = [a_session(first, owner=instructor_user), a_session(first), a_session(second)]
    html = browser(operator_user).get(SESSIONS).content.decode()
    assert "Pool default" in html and "Pool ccna" in html
    assert all(str(session.id) in html for session in sessions)


def test_the_queue_is_shown_in_order_with_positions_and_estimated_waits(admin_user):
    pool = a_pool(usable_workers=2, avg_session_seconds=600.0)
    queue = [a_session(pool) for _ in range(3)]  # positions 1, 2, 3: 1 round, 1 round, 2 rounds of 10 min
    html = browser(admin_user).get(SESSIONS).content.decode()
    table = html[html.index('<table class="waiting">'):]
    table = table[:table.index("</table>")]
    offsets = [table.index(str(session.id)) for session in queue]
    assert offsets == sorted(offsets)
    rows = table.split("<tr>")[2:]
    assert [row.split("</td>")[0].removeprefix("<td>") for row in rows] == ["1", "2", "3"]
    assert [row.count("about 10 min") for row in rows] == [1, 1, 0] and "about 20 min" in rows[2]


def test_the_wait_is_unknown_until_a_session_of_the_pool_has_finished(admin_user):
    a_session(a_pool())
    assert "unknown yet" in browser(admin_user).get(SESSIONS).content.decode()


def test_active_sessions_show_their_worker_lab_and_devices(admin_user):
    pool = a_pool()
    session = an_active_session_with_lab(pool, worker_name="cml-lab-7", topology="ospf-triangle",
                                         devices=("core-1", "edge-2"))
    html = browser(admin_user).get(SESSIONS).content.decode()
    table = html[html.index('<table class="active">'):]
    table = table[:table.index("</table>")]
    assert str(session.id) in table and "cml-lab-7" in table
    assert "ospf-triangle" in table and 'status-running">running</span>' in table and "1 ref<" in table
    assert "core-1, edge-2" in table


def test_a_session_is_never_shown_the_lab_another_principal_left_on_its_worker(
        instructor_user, other_instructor, admin_user):
    # other_instructor's session ended and left its lab idle on the worker (a lab outlives its session,
    # for its principal's next one); instructor_user's session now holds the worker.
    pool = a_pool()
    worker = WorkerFactory(aws_instance_id="", session_pool=pool.name, name="cml-shared")
    SessionLab.objects.create(worker=worker, status="running", topology_name="secret-topology", ref_count=0,
                              owner_key=user_owner_key(other_instructor.pk), topology_sha256="b" * 64,
                              cml_lab_id="lab-a", devices=[{"name": "their-router", "raw": {}}])
    session = a_session(pool, status="active", owner=instructor_user, worker=worker)
    html = browser(instructor_user).get(SESSIONS).content.decode()
    table = html[html.index('<table class="active">'):]
    table = table[:table.index("</table>")]
    assert str(session.id) in table and "cml-shared" in table and "no lab" in table
    assert "secret-topology" not in html and "their-router" not in html
    assert "0 refs" not in html and 'status-running">running</span>' not in table
    # staff see every lab: the row says the worker holds another principal's lab, never as the session's
    staff = browser(admin_user).get(SESSIONS).content.decode()
    row = staff[staff.index(str(session.id)):]
    row = row[:row.index("</tr>")]
    assert "no lab" in row and "another principal's lab: secret-topology, running" in row
    assert "their-router" not in row and "0 refs" not in row


def test_the_sessions_page_refreshes_its_pools_on_session_events(admin_user):
    # live.js re-renders the element with this id from the same URL on each session_status event
    # (tests/dashboard/test_browser_sessions.py watches it happen).
    an_active_session_with_lab(a_pool())
    html = browser(admin_user).get(SESSIONS).content.decode()
    main = html[html.index("<main"):]
    assert '<div id="session-pools" data-live-refresh="session_status">' in main
    assert main.count("data-live-") == 1


def test_a_long_queue_shows_its_head_and_says_how_many_wait(admin_user):
    pool = a_pool()
    Session.objects.bulk_create([
        Session(pool=pool, ticket=n, position=n, actor="anonymous", created_at=timezone.now(),
                last_seen_at=timezone.now()) for n in range(1, 106)])
    html = browser(admin_user).get(SESSIONS).content.decode()
    table = html[html.index('<table class="waiting">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 101  # the heading and the first 100
    assert "The first 100 of 105 waiting sessions." in html


def test_the_sessions_page_makes_as_many_queries_for_many_sessions_as_for_few(admin_user, instructor_user):
    client = browser(admin_user)
    pool = a_pool()
    a_session(pool, owner=instructor_user)
    an_active_session_with_lab(pool, owner=instructor_user)
    _queries(client, SESSIONS)  # warm caches (content types, session)
    few = _queries(client, SESSIONS)
    other = a_pool("ccna", usable_workers=1, avg_session_seconds=300.0)
    for _ in range(6):
        a_session(pool, owner=instructor_user)
        a_session(other)
        an_active_session_with_lab(pool)
        an_active_session_with_lab(other, owner=instructor_user)
    assert _queries(client, SESSIONS) == few
    instructor = browser(instructor_user)
    _queries(instructor, SESSIONS)
    assert _queries(instructor, SESSIONS) == few


# --- webhooks -------------------------------------------------------------------------------------------

def test_the_webhooks_page_lists_subscriptions_with_their_health(admin_user):
    now = timezone.now()
    healthy = a_subscription("https://hooks.example.test/ok", event_types=["io.lablet.instance.*"],
                             last_success_at=now)
    failing = a_subscription("https://hooks.example.test/down", active=False, consecutive_failures=7,
                             last_failure_at=now, disabled_reason="too many failures")
    html = browser(admin_user).get(WEBHOOKS).content.decode()
    table = html[html.index('<table class="subscriptions">'):]
    table = table[:table.index("</table>")]
    ok_row = table[table.index("https://hooks.example.test/ok"):table.index("https://hooks.example.test/down")]
    down_row = table[table.index("https://hooks.example.test/down"):]
    assert "io.lablet.instance.*" in ok_row and "<td>yes</td>" in ok_row and "<td>0</td>" in ok_row
    assert "<td>no <span" in down_row and "too many failures" in down_row and "<td>7</td>" in down_row
    assert f"/admin/webhooks/webhooksubscription/{healthy.pk}/change/" in ok_row
    assert f"/admin/webhooks/webhooksubscription/{failing.pk}/change/" in down_row
    assert "every event" not in ok_row and "<td>every event</td>" in down_row  # no filter: every event


def test_the_webhooks_page_shows_the_latest_50_attempts_with_status_codes(admin_user):
    subscription = a_subscription()
    start = timezone.now() - timedelta(hours=1)
    for n in range(1, 56):
        an_attempt(subscription, sequence_num=n, when=start + timedelta(seconds=n),
                   success=n != 55, status_code=503 if n == 55 else 200)
    html = browser(admin_user).get(WEBHOOKS).content.decode()
    table = html[html.index('<table class="attempts">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 51  # the heading and 50 attempts
    assert "<td>503</td>" in table and "HTTP 503" in table
    assert table.index("<td>503</td>") < table.index("<td>200</td>")  # newest first
    assert start.strftime("%Y-%m-%d") in table


def test_the_webhooks_page_makes_as_many_queries_for_many_rows_as_for_few(admin_user):
    client = browser(admin_user)
    an_attempt(a_subscription(), sequence_num=1)
    _queries(client, WEBHOOKS)  # warm caches (content types, session)
    few = _queries(client, WEBHOOKS)
    for n in range(12):
        an_attempt(a_subscription(f"https://hooks.example.test/{n}"), sequence_num=1, success=False, status_code=500)
    assert _queries(client, WEBHOOKS) == few
