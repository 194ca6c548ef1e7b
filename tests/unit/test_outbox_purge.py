"""Outbox retention against a real PostgreSQL: published rows older than the retention are
deleted in batches; recent ones and every unpublished row, however old, stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.db import create_pool
from gateway_core.ids import new_id
from orchestrator.outbox import OutboxPurge

RETENTION = timedelta(days=3)


@pytest.fixture(scope="module")
async def pool(postgres_server: ScratchServer) -> AsyncIterator[asyncpg.Pool]:
    settings = await postgres_server.database("outbox_purge", "orchestrator")
    created = await create_pool(settings, "orchestrator", "outbox-purge-tests")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture(autouse=True)
async def empty_outbox(pool: asyncpg.Pool) -> None:
    await pool.execute("DELETE FROM outbox")


async def add(pool: asyncpg.Pool, *, age: timedelta, published_age: timedelta | None) -> str:
    """An outbox row written `age` ago and published `published_age` ago (None: never)."""
    event_id = new_id("EVT")
    await pool.execute(
        "INSERT INTO outbox (event_id, topic, event_key, payload, created_at, published_at)"
        " VALUES ($1, 'payments.events', $2, '\\x7b7d', now() - $3::interval,"
        " now() - $4::interval)",
        event_id,
        new_id("PAY"),
        age,
        published_age,
    )
    return event_id


async def remaining(pool: asyncpg.Pool) -> set[str]:
    return {row["event_id"] for row in await pool.fetch("SELECT event_id FROM outbox")}


async def test_published_rows_past_the_retention_go_and_everything_else_stays(
    pool: asyncpg.Pool,
) -> None:
    expired = [
        await add(pool, age=RETENTION * 2, published_age=RETENTION + timedelta(minutes=1))
        for _ in range(3)
    ]
    recent = await add(pool, age=RETENTION * 2, published_age=RETENTION - timedelta(minutes=1))
    fresh = await add(pool, age=timedelta(seconds=1), published_age=timedelta(0))
    never_published = await add(pool, age=RETENTION * 10, published_age=None)

    assert await OutboxPurge(pool, RETENTION).purge() == len(expired)

    assert await remaining(pool) == {recent, fresh, never_published}
    assert await OutboxPurge(pool, RETENTION).purge() == 0


async def test_the_purge_works_through_any_backlog_in_batches(pool: asyncpg.Pool) -> None:
    old = RETENTION + timedelta(hours=1)
    for _ in range(7):
        await add(pool, age=old, published_age=old)
    kept = await add(pool, age=old, published_age=None)

    assert await OutboxPurge(pool, RETENTION, batch_size=3).purge() == 7

    assert await remaining(pool) == {kept}


async def test_concurrent_purges_delete_each_row_once_without_blocking(
    pool: asyncpg.Pool,
) -> None:
    old = RETENTION + timedelta(hours=1)
    for _ in range(40):
        await add(pool, age=old, published_age=old)
    purges = [OutboxPurge(pool, RETENTION, batch_size=4) for _ in range(3)]

    deleted = await asyncio.wait_for(asyncio.gather(*(p.purge() for p in purges)), 30)

    assert sum(deleted) == 40
    assert await remaining(pool) == set()


def test_a_retention_must_be_positive(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="retention"):
        OutboxPurge(pool, timedelta(0))
