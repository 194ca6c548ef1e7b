"""One real stack per test session (ephemeral ports, throwaway state), and ways to call it."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack.stack import Stack, StackError
from devstack.token import mint_token as sign_token
from orchestrator import ledger_store

TOKEN_TTL_SECONDS = 3600


class TokenMinter(Protocol):
    def __call__(self, merchant_id: str, role: str = "merchant", **overrides: Any) -> str: ...


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, Valkey, Tansu, every service and Envoy; logs under the session's tmp dir."""
    # Tests assert outcomes, not timing: a generous fraud deadline keeps a loaded CI machine
    # from turning a scored payment into a fail-open one (tests/unit/test_fraud_policy.py
    # covers the deadline itself).
    environ = {**os.environ, "FRAUD_TIMEOUT_MS": "2000"}
    local = Stack(
        tmp_path_factory.mktemp("stack"),
        ports="ephemeral",
        seed=False,
        keep_data=False,
        environ=environ,
    )
    try:
        local.start()
    except StackError as exc:
        # The message names the failing part and ends with the tail of its log.
        message = f"the local stack did not start: {exc}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="session")
def mint_token(stack: Stack) -> TokenMinter:
    """`mint_token(merchant_id, role="merchant", **overrides)`: a bearer token Envoy accepts.

    Overrides replace any argument of `devstack.token.mint_token` (secret, issuer, audience,
    ttl_seconds), to make the tokens Envoy must refuse.
    """

    def mint(merchant_id: str, role: str = "merchant", **overrides: Any) -> str:
        arguments: dict[str, Any] = {
            "secret": stack.env["JWT_SECRET"],
            "issuer": stack.env["JWT_ISSUER"],
            "audience": stack.env["JWT_AUDIENCE"],
            "ttl_seconds": TOKEN_TTL_SECONDS,
        }
        return sign_token(merchant_id=merchant_id, role=role, **(arguments | overrides))

    return mint


class EventReader(Protocol):
    async def __call__(self, payment_id: str, want: int) -> list[dict[str, Any]]: ...


@pytest.fixture(scope="session")
def kafka_events(stack: Stack) -> EventReader:
    """`await kafka_events(payment_id, want)`: that payment's events on payments.events, in
    the order they were published (partitions are assigned directly: group joins are slow)."""

    async def read(payment_id: str, want: int) -> list[dict[str, Any]]:
        topic = stack.env.get("KAFKA_TOPIC_PAYMENTS", "payments.events")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            if not partitions:
                await consumer._client.force_metadata_update()
                found_partitions = consumer.partitions_for_topic(topic) or set()
                partitions = [TopicPartition(topic, p) for p in found_partitions]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            found: list[dict[str, Any]] = []
            deadline = datetime.now(UTC) + timedelta(seconds=30)
            while len(found) < want and datetime.now(UTC) < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found += [json.loads(r.value) for r in records if r.key == payment_id.encode()]
            return found
        finally:
            await consumer.stop()

    return read


@pytest.fixture
async def api(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        yield client


@pytest.fixture
async def merchant(api: httpx.AsyncClient, mint_token: TokenMinter) -> dict[str, Any]:
    """A new merchant of its own: its fields, plus `auth` (its bearer header) and `admin`."""
    admin = {"Authorization": f"Bearer {mint_token('ops-admin', role='admin')}"}
    reply = await api.post(
        "/api/v1/admin/merchants", json={"name": f"Shop {uuid.uuid4().hex[:6]}"}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    found["auth"] = {"Authorization": f"Bearer {mint_token(found['merchant_id'])}"}
    found["admin"] = admin
    return found


@pytest.fixture
async def ledger_stays_consistent(stack: Stack) -> AsyncIterator[None]:
    """After the test: the ledger's invariants hold (use with pytest.mark.usefixtures)."""
    yield
    conn = await asyncpg.connect(stack.dsn, server_settings={"search_path": "orchestrator"})
    try:
        assert await ledger_store.check_invariants(conn) == []
    finally:
        await conn.close()
