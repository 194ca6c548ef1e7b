"""Webhook URLs may not reach the gateway's own network (SSRF), unless allow-listed.

A URL is refused when it is not http(s), carries credentials, or its host is, or resolves to,
an address that is loopback, private, link-local, CGNAT, cloud metadata or otherwise not
public, unless the address is inside WEBHOOK_ALLOWED_CIDRS. The check runs when an endpoint
is saved and again before every attempt; an attempt then connects to the very address it
checked (`checking_connector`), so a DNS answer that changes in between (rebinding) reaches
nothing internal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from webhook.settings import IPNetwork

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


class _CheckingResolver(AbstractResolver):
    """aiohttp connects to the addresses its resolver returns: this one returns only an
    address it has just checked, so every connection goes to a checked address."""

    def __init__(self, allowed: Sequence[IPNetwork], resolver: Resolver) -> None:
        self._allowed = tuple(allowed)
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = await checked_address(host, port, self._allowed, self._resolver)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def checking_connector(
    allowed: Sequence[IPNetwork], *, limit: int, resolver: Resolver = resolve
) -> aiohttp.TCPConnector:
    """An aiohttp connector whose every new connection goes to an address checked just before.

    Host names are resolved (without a cache) by a resolver that refuses them if any of their
    addresses is refused; aiohttp never resolves a literal address, so `literal_problem` checks
    those before the request. The URL keeps its host, so Host, SNI, certificate checks and the
    pool (keyed by host name) stay right.
    """
    return aiohttp.TCPConnector(
        limit=limit, use_dns_cache=False, resolver=_CheckingResolver(allowed, resolver)
    )


def literal_problem(url: str, allowed: Sequence[IPNetwork]) -> str | None:
    """Why a URL whose host is a literal address may not be called, or None (also for names)."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    problem = address_problem(address, allowed)
    return f"host {host!r} {problem}" if problem else None
