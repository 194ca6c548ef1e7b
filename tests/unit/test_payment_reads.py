"""Reading a payment back against a real PostgreSQL: one statement brings the payment and every
child (status history, refunds, disputes, attempts), each list in its stored order and each
value as the child's own table gives it; a locked read inside a transaction sees the children
the lock's previous holder committed; another merchant's payment is not found."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.errors import NotFound
from gateway_core.fees import DEFAULT_PRICING
from gateway_core.ids import new_id
from orchestrator.connectors.card import CardDetails
from orchestrator.connectors.registry import DETAILS_TYPES
from orchestrator.disputes import OPENED, Disputes
from orchestrator.domain.payment import Payment
from orchestrator.domain.states import Status
from orchestrator.processing import RepositoryBooks
from orchestrator.repository import NewPayment, Repository
from orchestrator.rows import attempt_from_row, dispute_from_row, refund_from_row
from orchestrator.servicers.wire import encode_event


class AnsweringDesk:
    """A provider's dispute desk that acknowledges every answer."""

    async def submit_evidence(self, **_: str) -> None:
        return None

    async def accept(self, **_: str) -> None:
        return None


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    return await postgres_server.database("payment_reads", "orchestrator")


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "orchestrator", "payment-read-tests")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def single(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection: what one statement leaves behind, the next sees."""
    pool = await create_pool(
        database.model_copy(update={"db_max_open_conns": 1, "db_max_idle_conns": 1}),
        "orchestrator",
        "payment-read-single",
    )
    try:
        yield pool
    finally:
        await pool.close()


def repository(pool: asyncpg.Pool) -> Repository:
    return Repository(pool, "payments.events", encode_event, DETAILS_TYPES)


async def captured_card_payment(
    repo: Repository, new_payment: Callable[..., NewPayment], amount_paisa: int = 100_000
) -> Payment:
    """A card payment that failed over from razorpay to payu and was captured there."""
    merchant_id = new_id("MER")
    merchant = await repo.create_merchant(
        merchant_id=merchant_id,
        name="Shop",
        email="",
        vpa=f"{merchant_id.lower()}@pg",
        category="5411",
    )
    created = await repo.create_payment(
        new_payment(
            merchant.merchant_id,
            amount_paisa=amount_paisa,
            payment_method="CARD",
            metadata={"order_id": "ORD-7"},
            payment_details=CardDetails(card_token="tok_1"),
            provider="razorpay",
        )
    )
    books = RepositoryBooks(repo)
    await books.pass_over(created.payment_id, "razorpay", "UNAVAILABLE")
    await books.switch_provider(created.payment_id, "payu")
    await repo.transition(created.payment_id, Status.PENDING, "sent to payu", strict=False)
    paid = await repo.transition(created.payment_id, Status.SUCCESS, "captured", strict=False)
    assert paid.applied
    return paid.record


async def test_a_payment_reads_back_with_every_child_in_order(
    pool: asyncpg.Pool, new_payment: Callable[..., NewPayment]
) -> None:
    repo = repository(pool)
    payment = await captured_card_payment(repo, new_payment)
    pid, merchant_id = payment.payment_id, payment.merchant_id
    _, first = await repo.reserve_refund(
        refund_id=new_id("RFD"),
        payment_id=pid,
        merchant_id=merchant_id,
        amount_paisa=10_000,
        reason="damaged",
        metadata={"ticket": "T-1"},
    )
    await repo.finish_refund(
        first.refund_id, processed=True, external_refund_id="ext-1", failure_reason=""
    )
    _, second = await repo.reserve_refund(
        refund_id=new_id("RFD"),
        payment_id=pid,
        merchant_id=merchant_id,
        amount_paisa=5_000,
        reason="late",
        metadata={"ticket": "T-2"},
    )
    disputes = Disputes(
        repo,
        DEFAULT_PRICING,
        desk=lambda provider: AnsweringDesk(),  # type: ignore[arg-type,return-value]
        callback_url=lambda provider: f"http://gateway.test/{provider}",
    )
    opened = await disputes.on_callback(
        "payu",
        {
            "type": OPENED,
            "case_reference": new_id("CASE"),
            "transaction_ref": pid,
            "amount_paisa": 20_000,
            "reason_code": "4853",
            "respond_by": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
        },
    )
    await disputes.submit_evidence(opened.dispute.dispute_id, merchant_id, {"summary": "proof"})

    read = await repo.get_payment(pid, merchant_id)

    assert [(s.from_status, s.to_status) for s in read.history] == [
        (None, Status.CREATED),
        (Status.CREATED, Status.PENDING),
        (Status.PENDING, Status.SUCCESS),
        (Status.SUCCESS, Status.PARTIALLY_REFUNDED),
    ]
    assert [r.refund_id for r in read.refunds] == [first.refund_id, second.refund_id]
    assert [(r.status, r.metadata) for r in read.refunds] == [
        ("PROCESSED", {"ticket": "T-1"}),
        ("PENDING", {"ticket": "T-2"}),
    ]
    assert [(d.dispute_id, d.status, d.evidence) for d in read.disputes] == [
        (opened.dispute.dispute_id, "UNDER_REVIEW", {"summary": "proof"})
    ]
    assert [(a.attempt_number, a.provider, a.status) for a in read.attempts] == [
        (1, "razorpay", "UNAVAILABLE"),
        (2, "payu", "SERVING"),
    ]
    assert read.metadata == {"order_id": "ORD-7"}
    assert read.payment_details == CardDetails(card_token="tok_1")
    # Every child exactly as its own table reads it: types (timestamps, jsonb, char(3)) too.
    assert read.refunds == tuple(
        refund_from_row(r)
        for r in await pool.fetch(
            "SELECT * FROM refunds WHERE payment_id = $1 ORDER BY created_at, refund_id", pid
        )
    )
    assert read.disputes == tuple(
        dispute_from_row(r)
        for r in await pool.fetch("SELECT * FROM disputes WHERE payment_id = $1", pid)
    )
    assert read.attempts == tuple(
        attempt_from_row(r)
        for r in await pool.fetch(
            "SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY attempt_number", pid
        )
    )
    assert read.history[-1].created_at.tzinfo is not None
    assert await repo.find_payment(pid) == read


async def test_another_merchants_payment_is_not_found(
    pool: asyncpg.Pool, new_payment: Callable[..., NewPayment]
) -> None:
    repo = repository(pool)
    payment = await captured_card_payment(repo, new_payment)

    with pytest.raises(NotFound):
        await repo.get_payment(payment.payment_id, new_id("MER"))
    with pytest.raises(NotFound):
        await repo.transition(
            payment.payment_id, Status.REFUNDED, "x", strict=True, merchant_id=new_id("MER")
        )
    async with pool.acquire() as conn, conn.transaction():
        assert await repo.lock_payment(conn, new_id("PAY")) is None


async def test_a_get_is_one_statement(
    single: asyncpg.Pool, new_payment: Callable[..., NewPayment]
) -> None:
    repo = repository(single)
    payment = await captured_card_payment(repo, new_payment)
    # Warm: the connection learns the children's row types once (asyncpg's introspection).
    await repo.get_payment(payment.payment_id, payment.merchant_id)
    logged: list[str] = []
    async with single.acquire() as conn:
        reset = conn.get_reset_query()

        def log(query: LoggedQuery) -> None:
            logged.append(query.query)

        conn.add_query_logger(log)
    logged.clear()

    read = await repo.get_payment(payment.payment_id, payment.merchant_id)
    await asyncio.sleep(0)  # loggers are called soon after the query, not during it
    statements = [q for q in logged if q != reset]  # the pool's reset on release is not ours
    assert len(statements) == 1, statements
    assert len(read.history) == 3
    assert len(read.attempts) == 2


async def test_a_locked_read_sees_the_children_its_lock_holder_committed(
    pool: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    """Read committed: the reader waiting on the row lock must not answer with children from
    before the holder's commit (the refunds it counts are what keeps refunds under the
    captured amount)."""
    repo = repository(pool)
    payment = await captured_card_payment(repo, new_payment)
    pid = payment.payment_id

    async def locked_read() -> Payment | None:
        async with pool.acquire() as conn, conn.transaction():
            return await repo.lock_payment(conn, pid)

    async with pool.acquire() as holder:
        async with holder.transaction():
            await repo.lock_payment(holder, pid)
            waiter = asyncio.create_task(locked_read())
            deadline = asyncio.get_running_loop().time() + 10
            while not await holder.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE NOT l.granted AND a.application_name = 'payment-read-tests')"
            ):
                assert asyncio.get_running_loop().time() < deadline, "the reader never waited"
                await asyncio.sleep(0.02)
            await holder.execute(
                "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_paisa, currency,"
                " status) VALUES ('RFD_held', $1, $2, 1000, 'INR', 'PENDING')",
                pid,
                payment.merchant_id,
            )
            await holder.execute(
                "INSERT INTO payment_status_history (payment_id, from_status, to_status, reason)"
                " VALUES ($1, 'SUCCESS', 'PARTIALLY_REFUNDED', 'held')",
                pid,
            )
        read = await asyncio.wait_for(waiter, 10)

    assert read is not None
    assert [r.refund_id for r in read.refunds] == ["RFD_held"]
    assert read.history[-1].reason == "held"


async def test_a_child_table_changed_by_a_migration_while_serving_still_reads(
    single: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    """A rolling upgrade migrates while the old replicas still serve: a connection that already
    decoded the children's row types must not fail on the new shape."""
    repo = repository(single)
    payment = await captured_card_payment(repo, new_payment)
    await repo.get_payment(payment.payment_id, payment.merchant_id)  # row types now cached
    await single.execute("ALTER TABLE payment_attempts ADD COLUMN added_by_a_migration text")
    try:
        # Inside a transaction, under the row lock (a transition's read) ...
        async with single.acquire() as conn, conn.transaction():
            locked = await repo.lock_payment(conn, payment.payment_id)
    finally:
        await single.execute("ALTER TABLE payment_attempts DROP COLUMN added_by_a_migration")
    # ... and a plain read, after the next change of shape.
    read = await repo.get_payment(payment.payment_id, payment.merchant_id)
    assert locked is not None
    assert [a.provider for a in locked.attempts] == ["razorpay", "payu"]
    assert [a.provider for a in read.attempts] == ["razorpay", "payu"]


async def test_creating_and_moving_a_payment_takes_one_statement_per_step(
    single: asyncpg.Pool,
    new_payment: Callable[..., NewPayment],
) -> None:
    repo = repository(single)
    warm = await captured_card_payment(repo, new_payment)  # the connection knows the row types now
    logged: list[str] = []
    async with single.acquire() as conn:
        conn.add_query_logger(lambda query: logged.append(query.query))
    created = await repo.create_payment(
        new_payment(
            warm.merchant_id,
            amount_paisa=500,
            payment_method="CARD",
            payment_details=CardDetails(card_token="tok_2"),
            provider="razorpay",
        ),
        then=(Status.PENDING, "sent to razorpay"),
    )
    await asyncio.sleep(0)  # loggers are called soon after the query, not during it
    # BEGIN; the payment with its attempt and first status; read back; its event; the move to
    # PENDING with its history row; read back; its event; COMMIT.
    assert len(logged) == 8, logged
    assert [(s.from_status, s.to_status) for s in created.history] == [
        (None, Status.CREATED),
        (Status.CREATED, Status.PENDING),
    ]
    assert [(a.attempt_number, a.provider) for a in created.attempts] == [(1, "razorpay")]
