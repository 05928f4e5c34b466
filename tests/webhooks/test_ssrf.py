"""SSRF: refused address classes at create and at delivery time, and the settings that lift them."""

import socket

import pytest

from apps.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt
from apps.webhooks.services import webhook_subscription_create, webhooks_dispatch_events
from apps.webhooks.ssrf import UnsafeWebhookUrl, check_url
from apps.webhooks.tasks import webhook_deliver
from apps.core.errors import ValidationFailed
from tests.webhooks.conftest import journal, subscribe

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.10.1/hook", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fc00::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
]


@pytest.mark.parametrize("url, reason", REFUSED)
def test_it_refuses_non_public_addresses(settings, url, reason):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(UnsafeWebhookUrl, match=reason):
        check_url(url)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://1.1.1.1/", "http:///nohost",
                                 "https://user:pw@1.1.1.1/hook"])
def test_it_refuses_other_schemes_and_malformed_urls(url):
    with pytest.raises(UnsafeWebhookUrl):
        check_url(url)


def test_a_public_address_is_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    target = check_url("https://93.184.216.34:8443/hook")
    assert (target.scheme, target.address, target.port) == ("https", "93.184.216.34", 8443)


def test_the_setting_allows_loopback_and_private_but_never_metadata(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert check_url("http://127.0.0.1:8080/hook").address == "127.0.0.1"
    assert check_url("http://10.0.0.5/hook").address == "10.0.0.5"
    for url in ("http://169.254.169.254/", "http://0.0.0.0/", "http://224.0.0.1/"):
        with pytest.raises(UnsafeWebhookUrl):
            check_url(url)


def test_an_allowed_host_may_be_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(UnsafeWebhookUrl):
        check_url("http://localhost:8080/hook")
    settings.WEBHOOK_ALLOWED_HOSTS = ["LOCALHOST"]
    assert check_url("http://localhost:8080/hook").host == "localhost"


@pytest.mark.parametrize("host", ["169.254.169.254", "100.100.100.200", "2002:a9fe:a9fe::"])
def test_an_allowed_host_never_reaches_metadata_or_link_local(settings, host):
    """WEBHOOK_ALLOWED_HOSTS lifts the refusal of private addresses only, as WEBHOOK_ALLOW_PRIVATE_NETWORKS
    does: the metadata, link-local and 6to4 forms of them stay refused."""
    settings.WEBHOOK_ALLOWED_HOSTS = [host]
    url = f"http://[{host}]/latest/meta-data/" if ":" in host else f"http://{host}/latest/meta-data/"

    with pytest.raises(UnsafeWebhookUrl):
        check_url(url)


def test_a_name_resolving_to_a_private_address_is_refused(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr(socket, "getaddrinfo",  # DNS is the boundary here: no resolver we control
                        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
                                         (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))])
    with pytest.raises(UnsafeWebhookUrl, match="10.0.0.7, a private address"):
        check_url("https://hooks.example.com/x")


@pytest.mark.django_db
def test_create_refuses_with_a_422_reason(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(ValidationFailed) as refused:
        webhook_subscription_create(actor="tests", url="http://169.254.169.254/latest", secret="s" * 20)
    assert "metadata" in refused.value.errors["url"][0]


@pytest.mark.django_db
def test_it_checks_again_at_delivery_time(settings, receiver, django_capture_on_commit_callbacks):
    subscribe(receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        webhooks_dispatch_events([journal()])
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False  # as if DNS now pointed the host at a private address

    assert webhook_deliver(WebhookDelivery.objects.get().pk) == "failed"  # refused, not retried
    assert receiver.requests == []
    assert "loopback" in WebhookDeliveryAttempt.objects.get().error


ALWAYS_REFUSED = [  # even with WEBHOOK_ALLOW_PRIVATE_NETWORKS: where clouds serve credentials
    ("http://169.254.169.254/latest/meta-data", "a cloud metadata address"),  # AWS, GCP, Azure, Oracle
    ("http://169.254.170.2/v2/credentials", "IPv4 link-local"),  # AWS ECS task metadata
    ("http://169.254.10.1/hook", "IPv4 link-local"),
    ("http://100.100.100.200/latest/meta-data", "a cloud metadata address"),  # Alibaba Cloud
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
    ("http://[2002:a9fe:a9fe::1]/", "6to4 address carrying 169.254.169.254, a cloud metadata address"),
    ("http://[2002:6464:64c8::1]/", "6to4 address carrying 100.100.100.200, a cloud metadata address"),
    ("http://[2002:a9fe:1::1]/", "6to4 address carrying 169.254.0.1, an IPv4 link-local"),
    # Teredo: server 65.54.227.120, client 169.254.169.254 (stored inverted: 5601:5601)
    ("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", "Teredo address carrying 169.254.169.254"),
    ("http://[2001:0:a9fe:a9fe::1]/", "Teredo address carrying 169.254.169.254"),  # as its server
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 address carrying 169.254.169.254"),
    ("http://[2002:0:0::1]/", "6to4 address carrying 0.0.0.0, an unspecified address"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
]


@pytest.mark.parametrize("url, reason", ALWAYS_REFUSED)
def test_it_refuses_metadata_link_local_and_what_carries_them_even_with_private_networks_allowed(settings, url, reason):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    with pytest.raises(UnsafeWebhookUrl, match=reason):
        check_url(url)


def test_a_6to4_or_teredo_address_carrying_a_private_address_is_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(UnsafeWebhookUrl, match="6to4 address carrying 10.0.0.1, a private address"):
        check_url("http://[2002:a00:1::1]/hook")
    with pytest.raises(UnsafeWebhookUrl, match="Teredo address carrying 127.0.0.1, a loopback address"):
        check_url("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook")
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # what the setting lifts for 10.0.0.1 it lifts for its 6to4 form
    assert check_url("http://[2002:a00:1::1]/hook").address == "2002:a00:1::1"


def test_a_6to4_address_carrying_a_public_address_is_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    assert check_url("http://[2002:5db8:d822::1]/hook").address == "2002:5db8:d822::1"  # 93.184.216.34
