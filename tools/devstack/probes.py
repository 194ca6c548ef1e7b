"""Readiness checks: each asks a component the question its clients will ask it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import aiosmtplib
import grpc
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_core.redis_client import ping, redis_at

# Kafka's TOPIC_ALREADY_EXISTS: creating the topics again is the normal restart.
_TOPIC_ALREADY_EXISTS = 36


class NotReady(Exception):
    """The component answered, but not with what a ready one says."""


async def until_ready(
    check: Callable[[], Awaitable[None]],
    *,
    what: str,
    patience: float,
    alive: Callable[[], None],
    attempt_timeout: float = 3.0,
) -> None:
    """Retry `check` for up to `patience` seconds; `alive` raises once a stack process died."""
    deadline = time.monotonic() + patience
    pause = 0.02
    last_error = "no answer yet"
    while True:
        alive()
        try:
            async with asyncio.timeout(attempt_timeout):
                await check()
        except Exception as exc:  # anything a not-yet-ready server makes a client raise
            last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {patience:.0f} s ({last_error})")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def tcp_open(host: str, port: int) -> None:
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    await writer.wait_closed()


async def smtp_ready(host: str, port: int) -> None:
    """An SMTP server that greets and answers NOOP."""
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=3, start_tls=False)
    await client.connect()
    try:
        await client.noop()
    finally:
        client.close()


async def redis_ping(host: str, port: int, password: str, db: int) -> None:
    client = redis_at(host, port, password=password, db=db)
    try:
        await ping(client)
    finally:
        await client.aclose()


async def kafka_metadata(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        if not cluster["brokers"]:
            raise NotReady("metadata lists no broker")
    finally:
        await admin.close()


async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, count, replication_factor=1) for name, count in partitions.items()]
        )
    finally:
        await admin.close()
    failures = [
        f"{topic}: {message or code}"
        for topic, code, message in response.topic_errors
        if code not in (0, _TOPIC_ALREADY_EXISTS)
    ]
    if failures:
        raise RuntimeError(f"cannot create Kafka topics: {'; '.join(failures)}")


async def grpc_serving(target: str) -> None:
    """The standard grpc.health.v1 check of the whole server (service "")."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise NotReady(
            f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        )


async def http_ok(url: str) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        response = await client.get(url)
    if response.status_code != 200:
        raise NotReady(f"GET {url} answered {response.status_code}: {response.text.strip()[:200]}")
