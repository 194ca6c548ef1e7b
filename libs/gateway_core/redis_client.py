"""The one way a service (or tool) opens Redis (Valkey): fail fast, never retry behind the caller.

Every Redis user here sits on a request path with a short deadline (Envoy's rate-limit call,
the orchestrator's fraud check), where a retried or slow Redis call only holds the request up:
each caller passes the timeout its own deadline allows, and a failure surfaces at once as
`redis.exceptions.RedisError` for the caller to degrade on.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway_core.config import Settings


def redis_at(
    host: str,
    port: int,
    *,
    password: str = "",
    db: int = 0,
    timeout_seconds: float | None = None,
) -> Redis:
    """A client of the server at `host:port`; `timeout_seconds` bounds connecting and each call."""
    return Redis(
        host=host,
        port=port,
        password=password or None,
        db=db,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), retries=0),
    )


def redis_client(settings: Settings, *, timeout_seconds: float | None = None) -> Redis:
    """The client of REDIS_HOST, REDIS_PORT, REDIS_PASSWORD and REDIS_DB."""
    return redis_at(
        settings.redis_host,
        settings.redis_port,
        password=settings.redis_password,
        db=settings.redis_db,
        timeout_seconds=timeout_seconds,
    )


async def ping(redis: Redis) -> None:
    """Raise unless the server answers PING (a service's readiness check)."""
    if not await redis.ping():
        raise ConnectionError("Redis did not answer PING")
