"""SSRF guard for webhook URLs: only http(s), and only hosts that resolve to public addresses.

Checked when a subscription is created or changed, and again before every attempt (DNS can change);
the attempt then connects to the address that was checked (no second lookup, so no DNS rebinding).
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

# Refused even with WEBHOOK_ALLOW_PRIVATE_NETWORKS: cloud metadata services (AWS, GCP, Azure, Oracle
# 169.254.169.254; AWS over IPv6 fd00:ec2::254; Alibaba 100.100.100.200) and all of IPv4 link-local, where
# clouds put more of them (AWS ECS task metadata 169.254.170.2, the VPC DNS and time servers, ...).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
IPV4_LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")
# NAT64's well-known prefix (RFC 6052): a translator forwards 64:ff9b::a.b.c.d to the IPv4 address a.b.c.d.
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class UnsafeWebhookUrl(Exception):
    """The URL may not be called; str() says why (shown in the 422 and in the delivery log)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (the Host header and the TLS server name)
    port: int
    address: str  # the checked IP address to connect to


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries and that a packet to it may reach through a relay or a
    translator: 6to4 (2002:AABB:CCDD::/48), Teredo (2001::/32: its server and its client) and NAT64
    (64:ff9b::a.b.c.d); each as (what carries it, the address). IPv4-mapped addresses are the IPv4 address
    itself (address_refusal)."""
    found = []
    if address.sixtofour:
        found.append(("6to4", address.sixtofour))
    if address.teredo:
        found.extend(("Teredo", embedded) for embedded in address.teredo)
    if address in NAT64_PREFIX:
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, bool] | None:
    """(reason, private_networks_setting_lifts_it) for an address webhooks may not reach, or None."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            address = address.ipv4_mapped
        else:
            # An IPv6 address that carries a refused IPv4 address is refused as that address is (the stricter
            # refusal first): 2002:a9fe:a9fe:: reaches 169.254.169.254 through a 6to4 relay.
            refusals = [(f"a {kind} address carrying {embedded}, {refusal[0]}", refusal[1])
                        for kind, embedded in embedded_ipv4(address)
                        if (refusal := address_refusal(embedded))]
            if refusals:
                return min(refusals, key=lambda refusal: refusal[1])
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address", False
    if address in IPV4_LINK_LOCAL:
        return "an IPv4 link-local address (169.254.0.0/16, where clouds serve instance metadata)", False
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
    # WEBHOOK_ALLOWED_HOSTS and WEBHOOK_ALLOW_PRIVATE_NETWORKS lift the refusal of private addresses only:
    # metadata, link-local and what carries them stay refused for every host.
    allowed_host = host in {h.lower() for h in settings.WEBHOOK_ALLOWED_HOSTS}
    for text in addresses:  # every address the name has: any of them could be the one connected to
        refusal = address_refusal(ipaddress.ip_address(text))
        if refusal and not (refusal[1] and (allowed_host or settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)):
            raise UnsafeWebhookUrl(f"The host {host} resolves to {text}, {refusal[0]}; webhooks may not call it.")
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])
