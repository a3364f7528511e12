"""Where a call's webhook may go. The service POSTs it from its own network, so a
`callback_url` must not reach what only that network can: never a link-local, multicast or
unspecified address or a cloud metadata service, and only `api.callback_hosts` when set.

Checked on the URL when a call is asked for (`callback_refused`, a clear 400), and again when
the webhook is sent: the URL once more (webhooks.py; a delivery may predate a rule), and the
addresses its host name resolves to as it connects (`GuardedResolver`), so a name that points
at a metadata service, or is re-pointed there later, is refused too.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

# Cloud metadata services that are not link-local (AWS over IPv6, Alibaba Cloud).
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))
# NAT64 prefixes (RFC 6052, RFC 8215): an IPv6 address there reaches the IPv4 inside it.
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# A host made of numbers only (2852039166, 0251.0376.0251.0376, 0xa9fea9fe) is an IPv4
# address to a resolver, whatever form it takes: only the dotted decimal one is checked.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*$")


def address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What this address is that a webhook must not reach (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)):
        if (what := address_refused(inner)) is not None:
            return what
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return "a link-local, multicast or unspecified address"
    if address in _METADATA:
        return "a cloud metadata service"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to: IPv4-mapped, NAT64 (a DNS64 resolver gives
    one for a name that has only an IPv4 address) and 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    packed = address.packed
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(packed[12:16])
    if address in _NAT64_LOCAL:  # a /48 prefix: bits 64-71 are the reserved "u" octet
        return ipaddress.IPv4Address(packed[6:8] + packed[9:11])
    return address.sixtofour


def callback_refused(url: str, allowed: tuple[str, ...] | None) -> str | None:
    """Why the service must not POST to `url` (None: it may). The host is read as aiohttp
    reads it (yarl: full-width dots and digits are ASCII ones); a name is checked when the
    webhook connects (`GuardedResolver`)."""
    try:
        host = (yarl.URL(url).host or "").lower().rstrip(".")
    except ValueError:
        return "the URL's host cannot be read"
    if not host:
        return "the URL names no host"
    if allowed is not None and host not in allowed:
        return f"{host} is not one of api.callback_hosts"
    try:
        address = _address(host)
    except ValueError:
        if _NUMERIC_HOST.match(host):
            return f"{host} is an IP address in a non-standard form"
        return None
    if (what := address_refused(address)) is not None:
        return f"{host} is {what}"
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses a webhook must not reach. A name with no other
    address fails to connect (OSError, a failed attempt the sender records and retries)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        # Not DefaultResolver: with aiodns installed that is one with resources to close,
        # and a connector does not close a resolver it was given.
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if address_refused(_address(r["host"])) is None]
        if results and not kept:
            address = results[0]["host"]
            what = address_refused(_address(address))
            # With an errno, aiohttp's ClientConnectorError shows our text (its strerror).
            raise OSError(errno.EACCES, f"{host} resolves to {address}, {what}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.partition("%")[0])  # fe80::1%eth0: the zone aside


_DEFAULT_PORTS = {"http": 80, "https": 443}


def receiver_of(url: str) -> str:
    """The receiver a callback URL names, scheme://host[:port], one spelling per server
    (the default port left out, no trailing dot): deliveries in flight are counted by it,
    and logs name it rather than the URL, whose path or query may hold a secret."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").rstrip("."), parts.port
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    default = port is None or port == _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" + ("" if default else f":{port}")


def webhook_session() -> aiohttp.ClientSession:
    """The webhook sender's HTTP session: every connection through `GuardedResolver`."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver()))


__all__ = [
    "GuardedResolver",
    "address_refused",
    "callback_refused",
    "receiver_of",
    "webhook_session",
]
