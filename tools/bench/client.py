"""The load generator's HTTP client: one aiohttp session to the gateway.

aiohttp rather than httpx because the generator shares the machine with the stack it measures:
every millisecond of its CPU is one the gateway does not get. Against a trivial local server,
httpx cost 0.46 to 0.68 ms of CPU per GET, aiohttp 0.06 (docs/benchmark.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp


class PoolTimeout(TimeoutError):
    """The request timed out before a connection was free: the generator's own limit."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Gateway:
    """At most `max_connections` kept-alive connections to `url`; each request, waiting for a
    connection included, ends within `request_timeout` seconds or raises TimeoutError
    (PoolTimeout if it never got a connection). Transport failures raise aiohttp.ClientError.
    Use as an async context manager."""

    def __init__(self, url: str, max_connections: int, request_timeout: float) -> None:
        self.url = url.rstrip("/")
        self.request_timeout = request_timeout
        # The queue for a connection is ours rather than the connector's, so that a request
        # that timed out waiting in it is told apart; the connector's limit is the same and so
        # never makes anyone wait.
        self._connections = asyncio.Semaphore(max_connections)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            # No timeout of aiohttp's: `request` bounds the whole request with one timer.
            timeout=aiohttp.ClientTimeout(),
            cookie_jar=aiohttp.DummyCookieJar(),  # nothing to keep; saves work per answer
            trust_env=False,  # no proxy from the environment between us and the gateway
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request to `path` (absolute, from the gateway's root); its whole answer."""
        if self._session is None:
            raise RuntimeError("the gateway client is not open")
        waiting = True
        try:
            async with asyncio.timeout(self.request_timeout), self._connections:
                waiting = False
                async with self._session.request(
                    method, self.url + path, json=json, headers=headers
                ) as response:
                    return Reply(response.status, await response.read())
        except TimeoutError:
            if waiting:
                raise PoolTimeout(f"no free connection in {self.request_timeout:g} s") from None
            raise
