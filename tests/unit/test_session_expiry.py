"""Checkout-session expiry with several web replicas, against a real PostgreSQL.

Each replica's expiry job expires the OPEN sessions past their time. Run at once, they expire
each session once, with one event; a session paid while a job is working stays COMPLETE and
the job goes on with the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from web.jobs import SessionExpiry
from web.repository import Repository
from web.sessions import Customer, NewSession, Status


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("session_expiry", "web")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "web", "session-expiry-tests")
    try:
        yield pool
    finally:
        await pool.close()


def replica(pool: asyncpg.Pool) -> Repository:
    return Repository(pool, lambda session_id: f"https://pay.example/checkout/{session_id}")


async def overdue_sessions(repo: Repository, pool: asyncpg.Pool, count: int) -> list[str]:
    """`count` OPEN sessions whose time ran out a minute ago."""
    new = NewSession(
        amount_paisa=10_000,
        currency="INR",
        description="Order",
        customer=Customer(),
        methods=("UPI",),
        return_url="https://shop.example/done",
        metadata={},
        expires_in=timedelta(minutes=15),
    )
    ids = [(await repo.create("MER_1", new, None)).checkout_session_id for _ in range(count)]
    await pool.execute(
        "UPDATE checkout_sessions SET expires_at = now() - interval '1 minute'"
        " WHERE checkout_session_id = ANY($1::text[])",
        ids,
    )
    return ids


async def events_of(pool: asyncpg.Pool, session_ids: list[str]) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT event_key, payload FROM outbox WHERE event_key = ANY($1::text[])", session_ids
    )
    return sorted((r["event_key"], json.loads(r["payload"])["type"]) for r in rows)


async def test_two_replicas_expire_each_overdue_session_once_with_one_event(
    pool: asyncpg.Pool,
) -> None:
    ids = await overdue_sessions(replica(pool), pool, 20)

    await asyncio.gather(
        SessionExpiry(replica(pool)).expire_due(), SessionExpiry(replica(pool)).expire_due()
    )

    assert await events_of(pool, ids) == sorted((i, "checkout.session.expired") for i in ids)
    for session_id in ids:
        assert (await replica(pool).get(session_id)).status is Status.EXPIRED


async def test_a_session_being_paid_while_the_job_runs_stays_complete_and_the_rest_expire(
    pool: asyncpg.Pool,
) -> None:
    """A payment watcher (on any replica) is completing one overdue session, its transaction
    not yet committed, while the expiry job runs: the job leaves that session to it and
    expires the others; nothing fails."""
    repo = replica(pool)
    ids = await overdue_sessions(repo, pool, 3)
    paid = ids[0]

    completing = await pool.acquire()
    try:
        completion = completing.transaction()
        await completion.start()
        await completing.execute(
            "UPDATE checkout_sessions SET status = 'COMPLETE', closed_at = now(),"
            " payment_id = 'PAY_1' WHERE checkout_session_id = $1",
            paid,
        )
        job = asyncio.create_task(SessionExpiry(repo).expire_due())
        await until_done_or_waiting_for_a_lock(pool, job)
        await completion.commit()
    finally:
        await pool.release(completing)
    await job

    assert (await repo.get(paid)).status is Status.COMPLETE
    assert [(await repo.get(i)).status for i in ids[1:]] == [Status.EXPIRED, Status.EXPIRED]
    assert await events_of(pool, ids) == sorted((i, "checkout.session.expired") for i in ids[1:])


async def until_done_or_waiting_for_a_lock(pool: asyncpg.Pool, job: asyncio.Task[int]) -> None:
    deadline = time.monotonic() + 10
    while not job.done() and time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
