"""The sessions page in Chromium: the queues are re-rendered by the server and swapped in when a session
event arrives (live.js data-live-refresh), so a new session, a promotion and an end show with no reload;
screenshots of the sessions and webhooks pages (docs/dashboard.md)."""

from apps.sessions.selectors import Principal
from apps.sessions.services.queue import session_create, session_end
from tests.dashboard.conftest import BROWSER_MARKS, log_in, playwright_sync, shot
from tests.dashboard.test_pages_sessions_webhooks import a_subscription, an_attempt
from tests.factories import WorkerFactory

pytestmark = BROWSER_MARKS

CLIENT = Principal(user_id=None, actor="anonymous@127.0.0.1")


def test_an_operator_watches_the_queue_move_without_a_reload(chromium, server, users):
    WorkerFactory(aws_instance_id="", name="cml-session-1", session_pool="default",
                  cml_service_status="available", license_status="registered", status="running")
    first = session_create(principal=CLIENT, pool_name="default")  # active on the one worker
    page = log_in(chromium, server, "operator")
    page.get_by_role("link", name="Sessions").click()
    playwright_sync.expect(page.locator("[data-live-indicator]")).to_have_text("live")
    active, waiting = page.locator("table.active tbody"), page.locator("table.waiting tbody")
    playwright_sync.expect(active).to_contain_text(str(first.id))
    playwright_sync.expect(waiting).to_contain_text("Nobody is waiting.")
    page.evaluate("window.__notReloaded = true")

    second = session_create(principal=CLIENT, pool_name="default")  # waits behind the first
    playwright_sync.expect(waiting).to_contain_text(str(second.id))
    playwright_sync.expect(waiting.locator("tr").first.locator("td").first).to_have_text("1")
    shot(page, "sessions")

    session_end(session_id=first.id, principal=CLIENT)  # the second is promoted
    playwright_sync.expect(active).to_contain_text(str(second.id))
    playwright_sync.expect(active).not_to_contain_text(str(first.id))
    playwright_sync.expect(waiting).to_contain_text("Nobody is waiting.")
    assert page.evaluate("window.__notReloaded") is True
    page.context.close()


def test_an_admin_reads_the_webhook_subscriptions_and_deliveries(chromium, server, users):
    subscription = a_subscription(url="https://hooks.example.test/grades", event_types=["lablet_instance.graded"])
    an_attempt(subscription, sequence_num=1, success=True, status_code=200)
    an_attempt(subscription, sequence_num=2, success=False, status_code=503)
    page = log_in(chromium, server, "admin")
    page.get_by_role("link", name="Webhooks").click()

    playwright_sync.expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    playwright_sync.expect(page.locator("body")).to_contain_text("https://hooks.example.test/grades")
    playwright_sync.expect(page.locator("body")).to_contain_text("503")
    shot(page, "webhooks")
    page.context.close()
