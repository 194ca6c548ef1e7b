"""Webhook URLs may not reach the gateway's own network (SSRF), unless allow-listed.

A URL is refused when it is not http(s), carries credentials, or its host is, or resolves to,
an address that is loopback, private, link-local, CGNAT, cloud metadata or otherwise not
public, unless the address is inside WEBHOOK_ALLOWED_CIDRS. The check runs when an endpoint
is saved and again before every attempt; an attempt then connects to the very address it
checked (`pinned_transport`), so a DNS answer that changes in between (rebinding) reaches
nothing internal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

import httpcore
import httpx

from gateway_core.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_URL_LENGTH = 2048
_SCHEMES = {"http": 80, "https": 443}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)


class RefusedDestination(Exception):
    """The URL may not be called; the message says why (safe to show the merchant)."""


def url_problem(url: str) -> str | None:
    """Why `url` is not an acceptable webhook URL by its text alone, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "must be an absolute http(s) URL"
    if parts.scheme not in _SCHEMES or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (user:password@)"
    if port == 0:
        return "must not use port 0"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    return None


def address_problem(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why a webhook may not connect to `address`, or None."""
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    if any(a in network for a in candidates for network in allowed if a.version == network.version):
        return None
    ip = candidates[-1]
    if ip in _METADATA:
        kind = "a cloud metadata address"
    elif ip.is_loopback:
        kind = "a loopback address"
    elif ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        kind = "not a public address"
    elif ip in _CGNAT:
        kind = "a carrier-grade NAT (CGNAT) address"
    elif ip.is_link_local:
        kind = "a link-local address"
    elif ip.is_private:
        kind = "a private address"
    elif not ip.is_global:
        kind = "not a public address"
    else:
        return None
    return f"reaches {ip}, {kind} (allow it with WEBHOOK_ALLOWED_CIDRS)"


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise RefusedDestination(f"host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 sockaddr's text may carry a scope ("fe80::1%eth0"); the address is before it.
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedDestination(f"host {host!r} does not resolve")
    return addresses


async def checked_address(
    host: str, port: int, allowed: Sequence[IPNetwork], resolver: Resolver = resolve
) -> IPAddress:
    """The address to connect to for `host`: refused (RefusedDestination) if ANY address the
    host resolves to is refused, else the first."""
    addresses = await resolver(host, port)
    for address in addresses:
        problem = address_problem(address, allowed)
        if problem:
            raise RefusedDestination(f"host {host!r} {problem}")
    return addresses[0]


async def destination_problem(
    url: str, allowed: Sequence[IPNetwork], resolver: Resolver = resolve
) -> str | None:
    """Why a webhook may not be sent to `url`, by its text and what its host resolves to now."""
    problem = url_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    try:
        await checked_address(
            parts.hostname or "", parts.port or _SCHEMES[parts.scheme], allowed, resolver
        )
    except RefusedDestination as exc:
        return str(exc)
    return None


class _PinningBackend(httpcore.AsyncNetworkBackend):
    """Opens every connection to the address it has just checked for the host the request
    names. The URL keeps its host name, so Host, SNI, certificate checks and the connection
    pool (keyed by host name) stay right."""

    def __init__(self, allowed: Sequence[IPNetwork], resolver: Resolver) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await checked_address(host, port, self._allowed, self._resolver)
        return await self._inner.connect_tcp(
            str(address), port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("webhooks are never sent to a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_transport(
    allowed: Sequence[IPNetwork], *, max_connections: int, resolver: Resolver = resolve
) -> httpx.AsyncHTTPTransport:
    """An httpx transport that checks the address of every connection it opens (no proxies
    from the environment: a proxy would connect on our behalf, unchecked)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport = httpx.AsyncHTTPTransport(trust_env=False, limits=limits)
    # httpx has no parameter for the network backend; its pool takes one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_PinningBackend(allowed, resolver),
    )
    return transport
