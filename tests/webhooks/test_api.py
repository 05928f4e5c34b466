"""/api/webhooks: CRUD for admins, the secret shown once, 422 on refused URLs, the delivery log."""

import pytest

from apps.audit.models import AuditEvent
from apps.webhooks.models import WebhookSubscription
from apps.webhooks.services import webhooks_dispatch_events
from apps.webhooks.tasks import webhook_deliver
from tests.webhooks.conftest import journal

pytestmark = pytest.mark.django_db


def test_admin_creates_lists_reads_updates_and_deletes(admin_client, receiver):
    created = admin_client.post("/api/webhooks", {"url": receiver.url, "event_types": ["io.lablet.instance.*"],
                                                 "description": "grading bridge"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30  # shown once
    assert body["id"].startswith("whk-") and body["active"] is True and body["created_by"] == "admin1"
    hook_id = body["id"]

    listed = admin_client.get("/api/webhooks").json()
    assert listed["total"] == 1 and listed["limit"] == 50 and listed["offset"] == 0
    assert listed["webhooks"][0]["id"] == hook_id and "secret" not in listed["webhooks"][0]
    assert "secret" not in admin_client.get(f"/api/webhooks/{hook_id}").json()

    patched = admin_client.patch(f"/api/webhooks/{hook_id}", {"active": False, "secret": "rotated-secret-0123456789"},
                                 format="json")
    assert patched.status_code == 200 and patched.json()["active"] is False and "secret" not in patched.json()
    assert WebhookSubscription.objects.get(public_id=hook_id).secret == "rotated-secret-0123456789"

    assert admin_client.delete(f"/api/webhooks/{hook_id}").status_code == 204
    assert admin_client.get(f"/api/webhooks/{hook_id}").status_code == 404
    audited = list(AuditEvent.objects.filter(resource_id=hook_id).values_list("event_type", flat=True))
    assert audited == ["webhook.created", "webhook.updated", "webhook.deleted"]
    assert not any("whsec_" in str(m) or "rotated-secret" in str(m)
                   for m in AuditEvent.objects.filter(resource_id=hook_id).values_list("metadata", flat=True))


def test_a_given_secret_is_kept_and_a_short_one_refused(admin_client, receiver):
    ok = admin_client.post("/api/webhooks", {"url": receiver.url, "secret": "my-own-secret-0123456789"}, format="json")
    assert ok.json()["secret"] == "my-own-secret-0123456789"
    short = admin_client.post("/api/webhooks", {"url": receiver.url, "secret": "short"}, format="json")
    assert short.status_code == 422 and "secret" in short.json()["errors"]


def test_it_refuses_an_unsafe_url_with_problem_json(admin_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    response = admin_client.post("/api/webhooks", {"url": "http://127.0.0.1:9000/hook"}, format="json")
    assert response.status_code == 422
    assert response["Content-Type"].startswith("application/problem+json")
    assert "loopback" in response.json()["errors"]["url"][0]
    assert not WebhookSubscription.objects.exists()
    bad_type = admin_client.post("/api/webhooks", {"url": "https://93.184.216.34/h", "event_types": ["worker.*"]},
                                 format="json")
    assert bad_type.status_code == 422 and "event_types" in bad_type.json()["errors"]


def test_unsafe_url_on_update_is_refused(admin_client, receiver, settings):
    hook_id = admin_client.post("/api/webhooks", {"url": receiver.url}, format="json").json()["id"]
    response = admin_client.patch(f"/api/webhooks/{hook_id}", {"url": "http://169.254.169.254/"}, format="json")
    assert response.status_code == 422 and "metadata" in response.json()["detail"]


def test_the_delivery_log_lists_every_attempt(admin_client, receiver, django_capture_on_commit_callbacks):
    receiver.responses = [503]
    hook_id = admin_client.post("/api/webhooks", {"url": receiver.url,
                                                 "event_types": ["io.lablet.instance.*"]}, format="json").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch_events([journal()])
    sub = WebhookSubscription.objects.get(public_id=hook_id)
    delivery = sub.deliveries.get()
    webhook_deliver(delivery.pk)
    sub.deliveries.update(next_attempt_at=delivery.created_at)
    webhook_deliver(delivery.pk)

    log = admin_client.get(f"/api/webhooks/{hook_id}/deliveries?sort=attempt&order=asc").json()
    assert log["total"] == 2
    first, second = log["deliveries"]
    assert (first["attempt"], first["status_code"], first["success"]) == (1, 503, False)
    assert first["next_attempt_at"] and first["error"] == "HTTP 503"
    assert (second["attempt"], second["status_code"], second["success"]) == (2, 200, True)
    assert second["event_type"] == "io.lablet.instance.running" and second["event_id"].startswith("evt-")
    assert second["response_excerpt"] == "answer 200" and second["duration_ms"] >= 0


@pytest.mark.parametrize("client_name", ["operator_client", "instructor_client"])
def test_only_admins_manage_webhooks(request, client_name, receiver):
    client = request.getfixturevalue(client_name)
    assert client.get("/api/webhooks").status_code == 403
    assert client.post("/api/webhooks", {"url": receiver.url}, format="json").status_code == 403


def test_the_admin_site_lists_subscriptions_without_their_secret(client, admin_user, receiver):
    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    from apps.webhooks.services import webhook_subscription_create

    sub = webhook_subscription_create(actor="tests", url=receiver.url, secret="admin-visible-0123456789")
    assert client.get("/admin/webhooks/webhooksubscription/").status_code == 200
    page = client.get(f"/admin/webhooks/webhooksubscription/{sub.pk}/change/")
    assert page.status_code == 200 and b"admin-visible-0123456789" not in page.content


def test_the_journal_names_the_webhook_host_never_its_path_or_query(admin_client, receiver, settings):
    """Receivers' URLs often carry their token (Slack, Teams, ...): the journal, which every admin, operator
    and webhook receiver reads, names the host only; so does the admin's change log (str())."""
    from apps.webhooks.services import webhook_subscription_disable
    from apps.webhooks.models import WebhookSubscription as Sub

    host = receiver.url.split("/")[2]
    hook_id = admin_client.post("/api/webhooks", {"url": receiver.url + "/T0KEN-created?token=s3cret-created"},
                                format="json").json()["id"]
    assert admin_client.patch(f"/api/webhooks/{hook_id}", {"url": receiver.url + "/T0KEN-updated?token=s3cret-updated"},
                              format="json").status_code == 200
    webhook_subscription_disable(subscription_id=Sub.objects.get(public_id=hook_id).pk, reason="tests")
    assert admin_client.delete(f"/api/webhooks/{hook_id}").status_code == 204

    rows = list(AuditEvent.objects.filter(resource_id=hook_id).order_by("pk").values())
    assert [row["event_type"] for row in rows] == ["webhook.created", "webhook.updated", "webhook.disabled",
                                                   "webhook.deleted"]
    journalled = str(rows)
    assert "T0KEN" not in journalled and "s3cret" not in journalled and "/hook" not in journalled
    created, updated, disabled, deleted = (row["metadata"] for row in rows)
    assert created["after"]["host"] == updated["before"]["host"] == updated["after"]["host"] == host
    assert updated["url_changed"] is True and disabled["host"] == host and deleted["before"]["host"] == host
    assert str(Sub(public_id="whk-1", url=receiver.url + "/T0KEN?token=s3cret")) == f"whk-1 → {host}"
