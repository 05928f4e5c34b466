"""SSRF guard for webhook URLs: only http(s), and only hosts that resolve to public addresses.

Checked when a subscription is created or changed, and again before every attempt (DNS can change);
the attempt then connects to the address that was checked (no second lookup, so no DNS rebinding).
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class UnsafeWebhookUrl(Exception):
    """The URL may not be called; str() says why (shown in the 422 and in the delivery log)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the Host header and the TLS server name)
    port: int
    address: str  # the checked IP address to connect to


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, bool] | None:
    """(reason, private_networks_setting_lifts_it) for an address webhooks may not reach, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address", False
    if address.is_unspecified:
        return "an unspecified address", False
    if address.is_multicast:
        return "a multicast address", False
    if address.is_loopback:
        return "a loopback address", True
    if address.is_link_local:
        return "a link-local address", True
    if address.is_private:
        return "a private address", True
    if address.is_reserved or not address.is_global:
        return "a reserved (non-public) address", True
    return None


def check_url(url: str) -> Target:
    """Resolve `url`'s host and return where to connect, or raise UnsafeWebhookUrl."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"Not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("Only http and https URLs are allowed.")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeWebhookUrl("The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("Credentials in the URL are not allowed; the signature authenticates LabManager.")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookUrl(f"The host {host} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))
    if not addresses:
        raise UnsafeWebhookUrl(f"The host {host} does not resolve.")
    allowed_hosts = {h.lower() for h in settings.WEBHOOK_ALLOWED_HOSTS}
    if host not in allowed_hosts:
        for text in addresses:  # every address the name has: any of them could be the one connected to
            refusal = address_refusal(ipaddress.ip_address(text))
            if refusal and not (refusal[1] and settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS):
                raise UnsafeWebhookUrl(f"The host {host} resolves to {text}, {refusal[0]}; webhooks may not call it.")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])
