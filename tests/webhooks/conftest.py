"""A real HTTP receiver on 127.0.0.1 (http.server in a thread) and helpers to journal events."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django_q.brokers import get_broker

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record, audit_seal

SECRET = "test-secret-0123456789abcdef"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


class Receiver:
    def __init__(self):
        self.requests: list[dict] = []
        self.responses: list[int] = []  # status codes to answer, in order; 200 once exhausted
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": self.headers, "body": body})
                code = receiver.responses.pop(0) if receiver.responses else 200
                payload = f"answer {code}".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on loopback
    settings.WEBHOOK_ALLOWED_HOSTS = []
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_RETRY_BASE_SECONDS = 1
    settings.WEBHOOK_DISABLE_AFTER_FAILURES = 2
    settings.WEBHOOK_TIMEOUT_SECONDS = 5.0
    settings.CLOUDEVENTS_SOURCE = "https://labmanager.test"
    return settings


@pytest.fixture
def queue():
    """django-q2's ORM broker: what async_task enqueued (not run: the tests run the tasks)."""
    broker = get_broker()
    broker.purge_queue()
    yield broker
    broker.purge_queue()


def subscribe(url, **kwargs):
    """A subscription whose cursor is past its own `webhook.created` event (sealed here, as after commit)."""
    from apps.webhooks.models import WebhookSubscription
    from apps.webhooks.services import webhook_subscription_create

    sub = webhook_subscription_create(actor="tests", url=url, secret=kwargs.pop("secret", SECRET), **kwargs)
    audit_seal()
    head = AuditEvent.objects.order_by("-sequence_num").values_list("sequence_num", flat=True).first()
    WebhookSubscription.objects.filter(pk=sub.pk).update(last_sequence_num=head)
    sub.refresh_from_db()
    return sub


def journal(event_type="lablet_instance.running", resource_id="inst-1", success=True, **metadata):
    """One sealed journal event (the test runs in one transaction: seal it here, as the seal after commit would)."""
    resource_type = event_type.split(".")[0]
    event = audit_record(event_type=event_type, actor="system", resource_type=resource_type, resource_id=resource_id,
                         action=event_type, success=success, metadata=metadata)
    audit_seal()
    return AuditEvent.objects.get(pk=event.pk)


def documented_verifier():
    """The receiver snippet of docs/webhooks.md, executed as written."""
    text = DOCS.read_text()
    code = re.search(r"```python\n(.*?def verify_lablet_signature.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)
    return namespace["verify_lablet_signature"]
