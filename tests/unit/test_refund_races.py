"""Refund settlement with several orchestrator replicas, against a real PostgreSQL.

A PENDING refund can be settled by the merchant's request, by a provider callback, by a status
inquiry and by the refund-retry job of any replica, at the same time. Whatever the
interleaving, a refund is settled once: one final status, one ledger entry, one event; and the
retry jobs of two replicas never work on the same refund at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.ids import new_id
from orchestrator import ledger_store
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.domain.states import Status
from orchestrator.repository import NewPayment, Repository
from orchestrator.servicers.wire import encode_event

LEASE = timedelta(minutes=1)


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("refund_races", "orchestrator")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "orchestrator", "refund-race-tests")
    try:
        yield pool
    finally:
        await pool.close()


async def pending_refund(
    repo: Repository, new_payment: Callable[..., NewPayment], amount_paisa: int = 10_000
) -> tuple[str, str]:
    """A captured UPI payment with one PENDING refund of all of it: (payment id, refund id)."""
    merchant_id = new_id("MER")
    merchant = await repo.create_merchant(
        merchant_id=merchant_id,
        name="Shop",
        email="",
        vpa=f"{merchant_id.lower()}@pg",
        category="5411",
    )
    created = await repo.create_payment(
        new_payment(merchant.merchant_id, amount_paisa=amount_paisa),
        then=(Status.PENDING, "collect request sent"),
    )
    paid = await repo.transition(created.payment_id, Status.SUCCESS, "approved", strict=False)
    assert paid.record.status == Status.SUCCESS
    _, refund = await repo.reserve_refund(
        refund_id=new_id("RFD"),
        payment_id=created.payment_id,
        merchant_id=None,
        amount_paisa=None,
        reason="",
        metadata={},
    )
    assert refund.status == "PENDING"
    return created.payment_id, refund.refund_id


async def refund_events(pool: asyncpg.Pool, payment_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE event_key = $1 ORDER BY id", payment_id
    )
    types = [json.loads(r["payload"])["type"] for r in rows]
    return [t for t in types if t.startswith("refund.")]


async def until_waiting_for_locks(pool: asyncpg.Pool, count: int) -> None:
    """Until `count` sessions wait for a row lock (the racers are lined up behind the holder)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} sessions never waited for the payment's lock")


async def test_two_settlements_racing_on_one_pending_refund_settle_it_once(
    pool: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    """A provider callback says PROCESSED while a retry on another replica says FAILED: both
    found the refund PENDING before either committed. The first to get the lock settles it;
    the other changes nothing (no second event, no FAILED over a booked refund)."""
    repo = Repository(pool, "payments.events", encode_event, DETAILS_TYPES)
    payment_id, refund_id = await pending_refund(repo, new_payment)

    holder = await pool.acquire()
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT 1 FROM payments WHERE payment_id = $1 FOR UPDATE", payment_id)
        processed = asyncio.create_task(
            repo.finish_refund(
                refund_id, processed=True, external_refund_id="UPIRF1", failure_reason=""
            )
        )
        await until_waiting_for_locks(pool, 1)
        failed = asyncio.create_task(
            repo.finish_refund(
                refund_id, processed=False, external_refund_id="", failure_reason="declined"
            )
        )
        await until_waiting_for_locks(pool, 2)
        await hold.rollback()
    finally:
        await pool.release(holder)
    (_, first), (payment, second) = await asyncio.gather(processed, failed)

    assert first.status == second.status == "PROCESSED"
    assert payment.status == Status.REFUNDED
    assert await refund_events(pool, payment_id) == ["refund.created", "refund.processed"]
    stored = await repo.find_refund(refund_id)
    assert stored is not None
    assert (stored.status, stored.external_refund_id, stored.failure_reason) == (
        "PROCESSED",
        "UPIRF1",
        "",
    )
    async with pool.acquire() as conn:
        assert await ledger_store.check_invariants(conn) == []
        refund_entries = await conn.fetchval(
            "SELECT count(*) FROM journal_entries WHERE refund_id = $1", refund_id
        )
    assert refund_entries == 1


async def stale(pool: asyncpg.Pool, refund_id: str) -> None:
    """Make the refund look asked for a minute ago (the provider has been silent since)."""
    await pool.execute(
        "UPDATE refunds SET created_at = now() - interval '1 minute' WHERE refund_id = $1",
        refund_id,
    )


async def test_two_replicas_retry_jobs_never_claim_the_same_stale_refund(
    pool: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    replica_a = Repository(pool, "payments.events", encode_event, DETAILS_TYPES)
    replica_b = Repository(pool, "payments.events", encode_event, DETAILS_TYPES)
    refund_ids = set()
    for _ in range(6):
        _, refund_id = await pending_refund(replica_a, new_payment)
        await stale(pool, refund_id)
        refund_ids.add(refund_id)

    claimed_a, claimed_b = await asyncio.gather(
        replica_a.claim_stale_refunds(100, LEASE), replica_b.claim_stale_refunds(100, LEASE)
    )
    ids_a = {refund.refund_id for _, refund in claimed_a} & refund_ids
    ids_b = {refund.refund_id for _, refund in claimed_b} & refund_ids

    assert ids_a | ids_b == refund_ids
    assert not ids_a & ids_b
    # Leased: the next rounds of either replica leave them alone until the lease ends.
    again = await replica_a.claim_stale_refunds(100, LEASE)
    assert not {refund.refund_id for _, refund in again} & refund_ids


async def test_a_refund_whose_lease_ran_out_is_claimed_again_and_a_settled_one_never(
    pool: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    repo = Repository(pool, "payments.events", encode_event, DETAILS_TYPES)
    _, silent = await pending_refund(repo, new_payment)
    _, settled = await pending_refund(repo, new_payment)
    for refund_id in (silent, settled):
        await stale(pool, refund_id)
    first = {refund.refund_id for _, refund in await repo.claim_stale_refunds(100, LEASE)}
    assert {silent, settled} <= first
    await repo.finish_refund(settled, processed=True, external_refund_id="X", failure_reason="")
    # The worker that leased them died: its leases run out.
    await pool.execute(
        "UPDATE refunds SET next_retry_at = now() - interval '1 second'"
        " WHERE refund_id = ANY($1::text[])",
        [silent, settled],
    )

    again = {refund.refund_id for _, refund in await repo.claim_stale_refunds(100, LEASE)}

    assert silent in again
    assert settled not in again
