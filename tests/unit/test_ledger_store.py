"""The ledger in a real PostgreSQL: posting, replays, the commit-time balance check, balances and
the invariant report. One throwaway server per session (the devstack's embedded binaries)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.config import Settings
from gateway_core.db import create_pool
from gateway_core.errors import FailedPrecondition
from gateway_core.fees import DEFAULT_PRICING, Fee, compute_fee, dispute_fee
from gateway_core.ids import new_id
from orchestrator.connectors.card import emi
from orchestrator.domain.ledger import (
    JournalEntry,
    capture_entry,
    dispute_opened_entry,
    dispute_won_entry,
    payment_settlement_entry,
    refund_entry,
)
from orchestrator.ledger_store import (
    MerchantBalance,
    check_invariants,
    load_pricing,
    merchant_balance,
    post_entry,
)
from orchestrator.settlement_store import SettlementLine, post_settlement_line, provider_balances

PROVIDER = "sandbox_acquirer"
START_SECONDS = 30


@pytest.fixture(scope="session")
async def database(postgres_server: ScratchServer) -> Settings:
    """Its own database, with the orchestrator's migrations applied."""
    return await postgres_server.database("ledger", "orchestrator")


@pytest.fixture(scope="session")
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "orchestrator", "ledger-tests")
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def rolled_back(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that is thrown away: seeds a problem without leaving it behind."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


async def new_merchant(conn: asyncpg.Connection) -> str:
    merchant_id = new_id("MER")
    await conn.execute(
        "INSERT INTO merchants (merchant_id, name, vpa) VALUES ($1, 'Test shop', $2)",
        merchant_id,
        f"{merchant_id.lower()}@paygate",
    )
    return merchant_id


async def new_payment(
    conn: asyncpg.Connection, merchant_id: str, amount: int, method: str = "CARD"
) -> str:
    payment_id = new_id("PAY")
    await conn.execute(
        "INSERT INTO payments (payment_id, merchant_id, amount_paisa, currency, payment_method,"
        " status, provider) VALUES ($1, $2, $3, 'INR', $4, 'CREATED', $5)",
        payment_id,
        merchant_id,
        amount,
        method,
        PROVIDER,
    )
    return payment_id


def capture_of(payment_id: str, merchant_id: str, amount: int, fee: Fee) -> JournalEntry:
    return capture_entry(
        payment_id=payment_id,
        merchant_id=merchant_id,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=amount,
        fee=fee,
    )


def refund_of(payment_id: str, merchant_id: str, amount: int) -> JournalEntry:
    return refund_entry(
        payment_id=payment_id,
        refund_id=new_id("RFD"),
        merchant_id=merchant_id,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=amount,
    )


async def capture(
    conn: asyncpg.Connection, merchant_id: str, amount: int, method: str = "CARD"
) -> tuple[str, Fee]:
    """What the orchestrator does on SUCCESS: status, fees and journal in one transaction."""
    async with conn.transaction():
        payment_id = await new_payment(conn, merchant_id, amount, method)
        fee = compute_fee(amount, DEFAULT_PRICING[method])
        await conn.execute(
            "UPDATE payments SET status = 'SUCCESS', fees_paisa = $2, tax_paisa = $3"
            " WHERE payment_id = $1",
            payment_id,
            fee.fee_paisa,
            fee.tax_paisa,
        )
        assert await post_entry(conn, capture_of(payment_id, merchant_id, amount, fee))
    return payment_id, fee


async def refund(
    conn: asyncpg.Connection, payment_id: str, merchant_id: str, amount: int, status: str
) -> str:
    """What the orchestrator does when a refund is processed: the row, the status, the journal."""
    async with conn.transaction():
        entry = refund_of(payment_id, merchant_id, amount)
        await insert_refund(conn, entry, "PROCESSED")
        await conn.execute(
            "UPDATE payments SET status = $2 WHERE payment_id = $1", payment_id, status
        )
        assert await post_entry(conn, entry)
    assert entry.refund_id is not None
    return entry.refund_id


async def insert_refund(
    conn: asyncpg.Connection, entry: JournalEntry, status: str, kind: str = "REFUND"
) -> None:
    await conn.execute(
        "INSERT INTO refunds (refund_id, payment_id, merchant_id, amount_paisa, currency,"
        " status, kind) VALUES ($1, $2, $3, $4, 'INR', $5, $6)",
        entry.refund_id,
        entry.payment_id,
        entry.merchant_id,
        entry.amount_paisa,
        status,
        kind,
    )


async def postings_of(conn: asyncpg.Connection | asyncpg.Pool, journal_id: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT account_id, amount_paisa FROM postings WHERE journal_id = $1", journal_id
    )
    return {row["account_id"]: row["amount_paisa"] for row in rows}


async def insert_raw_journal(
    conn: asyncpg.Connection,
    journal_id: str,
    payment_id: str,
    merchant_id: str,
    *lines: tuple[str, int],
) -> None:
    """A journal as hand-written SQL might leave it, bypassing domain/ledger.py."""
    await conn.execute(
        "INSERT INTO ledger_accounts (account_id, kind, currency)"
        " VALUES ('fee_revenue:INR', 'fee_revenue', 'INR') ON CONFLICT DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO journal_entries (journal_id, kind, payment_id, merchant_id, currency)"
        " VALUES ($1, 'adjustment', $2, $3, 'INR')",
        journal_id,
        payment_id,
        merchant_id,
    )
    for account_id, amount in lines:
        await conn.execute(
            "INSERT INTO postings (journal_id, account_id, amount_paisa) VALUES ($1, $2, $3)",
            journal_id,
            account_id,
            amount,
        )


async def test_pricing_table_loads_as_the_default_pricing(pool: asyncpg.Pool) -> None:
    assert await load_pricing(pool) == DEFAULT_PRICING


async def test_capture_and_refund_are_posted_with_their_accounts(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 10_000)
        await refund(conn, payment_id, merchant_id, 4_000, "PARTIALLY_REFUNDED")
    payable = f"merchant_payable:{merchant_id}:INR"
    assert await postings_of(pool, f"capture:{payment_id}") == {
        f"provider_clearing:{PROVIDER}:INR": 10_000,
        payable: -9_764,
        "fee_revenue:INR": -200,
        "gst_payable:INR": -36,
    }
    refunds = await pool.fetch(
        "SELECT journal_id, refund_id FROM journal_entries"
        " WHERE payment_id = $1 AND kind = 'refund'",
        payment_id,
    )
    assert len(refunds) == 1
    assert refunds[0]["refund_id"].startswith("RFD_")
    assert await postings_of(pool, refunds[0]["journal_id"]) == {
        payable: 4_000,
        f"provider_clearing:{PROVIDER}:INR": -4_000,
    }
    account = await pool.fetchrow("SELECT * FROM ledger_accounts WHERE account_id = $1", payable)
    assert (account["kind"], account["merchant_id"], account["currency"]) == (
        "merchant_payable",
        merchant_id,
        "INR",
    )


async def test_replayed_capture_returns_false_and_changes_nothing(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, fee = await capture(conn, merchant_id, 5_000)
        before = await conn.fetchval("SELECT count(*) FROM postings")
        async with conn.transaction():
            # Even a replay built differently is recognised by (kind, payment, refund).
            replay = capture_of(payment_id, merchant_id, 5_000, Fee(0, 0))
            assert await post_entry(conn, replay) is False
        assert await conn.fetchval("SELECT count(*) FROM postings") == before
    assert (await postings_of(pool, f"capture:{payment_id}"))["fee_revenue:INR"] == -fee.fee_paisa


async def test_posting_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        entry = capture_of(payment_id, merchant_id, 1_000, Fee(0, 0))
        with pytest.raises(RuntimeError, match="transaction"):
            await post_entry(conn, entry)


async def test_concurrent_posts_of_one_capture_take_effect_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 7_000)
        await conn.execute(
            "UPDATE payments SET status = 'SUCCESS' WHERE payment_id = $1", payment_id
        )
    entry = capture_of(payment_id, merchant_id, 7_000, Fee(0, 0))

    async def post() -> bool:
        async with pool.acquire() as conn, conn.transaction():
            return await post_entry(conn, entry)

    assert sorted(await asyncio.gather(post(), post(), post())) == [False, False, True]


async def test_unbalanced_journal_is_rejected_at_commit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        journal = f"adjustment:{payment_id}"
        transaction = conn.transaction()
        await transaction.start()
        # Accepted for now: the check waits for the commit, when all postings are in.
        await insert_raw_journal(conn, journal, payment_id, merchant_id, ("fee_revenue:INR", 100))
        with pytest.raises(asyncpg.CheckViolationError, match=f"journal {journal} is unbalanced"):
            await transaction.commit()
        count = "SELECT count(*) FROM journal_entries WHERE journal_id = $1"
        assert await conn.fetchval(count, journal) == 0


async def test_journal_without_postings_is_rejected_at_commit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        with pytest.raises(asyncpg.CheckViolationError, match="0 postings"):
            await conn.execute(
                "INSERT INTO journal_entries (journal_id, kind, payment_id, merchant_id,"
                " currency) VALUES ($1, 'adjustment', $2, $3, 'INR')",
                f"adjustment:{payment_id}",
                payment_id,
                merchant_id,
            )


async def test_posted_ledger_rows_cannot_be_rewritten(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 2_000)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute(
                "UPDATE postings SET amount_paisa = amount_paisa * 2 WHERE journal_id = $1",
                f"capture:{payment_id}",
            )
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute(
                "DELETE FROM journal_entries WHERE journal_id = $1", f"capture:{payment_id}"
            )


async def test_merchant_balance_sums_captures_fees_tax_and_refunds(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        card, _ = await capture(conn, merchant_id, 10_000, "CARD")  # fee 200, GST 36
        await capture(conn, merchant_id, 5_000, "UPI")  # no fee
        await capture(conn, merchant_id, 100_000, "WALLET")  # fee 1900, GST 342
        await refund(conn, card, merchant_id, 2_500, "PARTIALLY_REFUNDED")
        await refund(conn, card, merchant_id, 7_500, "REFUNDED")
        other = await new_merchant(conn)
        await capture(conn, other, 99_999, "CARD")
    assert await merchant_balance(pool, merchant_id, "INR") == MerchantBalance(
        merchant_id=merchant_id,
        currency="INR",
        payable_paisa=115_000 - 2_100 - 378 - 10_000,
        captured_paisa=115_000,
        fees_paisa=2_100,
        tax_paisa=378,
        refunded_paisa=10_000,
    )


async def test_merchant_without_journals_has_a_zero_balance(pool: asyncpg.Pool) -> None:
    assert await merchant_balance(pool, "MER_NONE", "INR") == MerchantBalance(
        "MER_NONE", "INR", 0, 0, 0, 0, 0
    )


async def test_invariants_hold_on_a_ledger_written_by_the_rules(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 3_000, "NET_BANKING")
        await refund(conn, payment_id, merchant_id, 3_000, "REFUNDED")
        await new_payment(conn, merchant_id, 1_000)  # CREATED: nothing to post yet
    assert await check_invariants(pool) == []


async def test_invariants_report_an_unbalanced_journal_and_currency(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        journal = f"adjustment:{payment_id}"
        # Seen inside the transaction, before the commit-time check would refuse it.
        await insert_raw_journal(conn, journal, payment_id, merchant_id, ("fee_revenue:INR", 7))
        problems = await check_invariants(conn)
    assert problems == [
        f"journal {journal} has 1 postings summing to 7 paisa (needs 2 or more, summing to 0)",
        "all INR postings sum to 7 paisa, not 0",
    ]


async def test_invariants_report_a_posting_in_another_currency(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        await conn.execute(
            "INSERT INTO ledger_accounts (account_id, kind, currency)"
            " VALUES ('fee_revenue:USD', 'fee_revenue', 'USD')"
        )
        journal = f"adjustment:{payment_id}"
        await insert_raw_journal(
            conn, journal, payment_id, merchant_id, ("fee_revenue:INR", 5), ("fee_revenue:USD", -5)
        )
        problems = await check_invariants(conn)
    assert problems == [f"journal {journal} (INR) posts to fee_revenue:USD, kept in USD"]


async def test_invariants_report_a_captured_payment_without_capture(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        await conn.execute(
            "UPDATE payments SET status = 'SUCCESS' WHERE payment_id = $1", payment_id
        )
        problems = await check_invariants(conn)
    assert problems == [f"payment {payment_id} is SUCCESS with 0 capture journals, not 1"]


async def test_invariants_report_a_capture_of_an_uncaptured_payment(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        await conn.execute(
            "UPDATE payments SET status = 'PENDING' WHERE payment_id = $1", payment_id
        )
        await post_entry(conn, capture_of(payment_id, merchant_id, 1_000, Fee(0, 0)))
        problems = await check_invariants(conn)
    assert problems == [
        f"capture journal capture:{payment_id} belongs to payment {payment_id}, which is PENDING"
    ]


async def test_invariants_report_a_capture_of_the_wrong_amount(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 1_000)
        await conn.execute(
            "UPDATE payments SET status = 'SUCCESS' WHERE payment_id = $1", payment_id
        )
        await post_entry(conn, capture_of(payment_id, merchant_id, 1_001, Fee(0, 0)))
        problems = await check_invariants(conn)
    assert problems == [
        f"capture journal capture:{payment_id} moves 1001 INR for {merchant_id};"
        f" payment {payment_id} is 1000 INR for {merchant_id}"
    ]


async def test_invariants_report_refunds_beyond_the_amount(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 1_000, "UPI")
    async with rolled_back(pool) as conn:
        for amount in (600, 401):
            entry = refund_of(payment_id, merchant_id, amount)
            await insert_refund(conn, entry, "PROCESSED")
            await post_entry(conn, entry)
        await conn.execute(
            "UPDATE payments SET status = 'REFUNDED' WHERE payment_id = $1", payment_id
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"payment {payment_id} is REFUNDED, but its processed refunds total 1001 of 1000 paisa",
        f"payment {payment_id}: 2 refund journals total 1001 paisa, more than its 1000",
    ]


async def test_invariants_report_payment_fees_the_ledger_did_not_charge(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 10_000, "CARD")
    async with rolled_back(pool) as conn:
        await conn.execute("UPDATE payments SET fees_paisa = 0 WHERE payment_id = $1", payment_id)
        problems = await check_invariants(conn)
    assert problems == [
        f"payment {payment_id} shows fee 0 + tax 36; its capture journal charged 200 + 36"
    ]


async def test_invariants_report_a_processed_refund_without_its_journal(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 1_000, "UPI")
    async with rolled_back(pool) as conn:
        entry = refund_of(payment_id, merchant_id, 300)
        await insert_refund(conn, entry, "PROCESSED")
        await conn.execute(
            "UPDATE payments SET status = 'PARTIALLY_REFUNDED' WHERE payment_id = $1", payment_id
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"refund {entry.refund_id} of payment {payment_id} is PROCESSED for 300 paisa;"
        " its refund journals: none"
    ]


async def test_invariants_report_a_refund_journal_without_a_processed_refund(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 1_000, "UPI")
    async with rolled_back(pool) as conn:
        entry = refund_of(payment_id, merchant_id, 1_000)
        await insert_refund(conn, entry, "FAILED")
        await post_entry(conn, entry)
        problems = await check_invariants(conn)
    assert problems == [
        f"refund journal refund:{payment_id}:{entry.refund_id} has no PROCESSED refund (FAILED)"
    ]


@pytest.mark.parametrize(
    ("status", "refunded"),
    [("SUCCESS", 400), ("PARTIALLY_REFUNDED", 1_000), ("REFUNDED", 999)],
)
async def test_invariants_report_a_refund_status_that_disagrees_with_the_refunds(
    pool: asyncpg.Pool, status: str, refunded: int
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 1_000, "UPI")
    async with rolled_back(pool) as conn:
        entry = refund_of(payment_id, merchant_id, refunded)
        await insert_refund(conn, entry, "PROCESSED")
        await post_entry(conn, entry)
        await conn.execute(
            "UPDATE payments SET status = $2 WHERE payment_id = $1", payment_id, status
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"payment {payment_id} is {status}, but its processed refunds total {refunded} of"
        " 1000 paisa"
    ]


async def test_a_reversed_late_success_keeps_the_ledger_consistent(pool: asyncpg.Pool) -> None:
    """A payment closed before the money came: capture (no fee) and reversal both booked."""
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id = await new_payment(conn, merchant_id, 2_000, "UPI")
        await conn.execute(
            "UPDATE payments SET status = 'FAILED' WHERE payment_id = $1", payment_id
        )
        await post_entry(conn, capture_of(payment_id, merchant_id, 2_000, Fee(0, 0)))
        reversal = refund_of(payment_id, merchant_id, 2_000)
        await insert_refund(conn, reversal, "PENDING", kind="REVERSAL")
        assert await check_invariants(conn) == []
        await conn.execute(
            "UPDATE refunds SET status = 'PROCESSED' WHERE refund_id = $1", reversal.refund_id
        )
        await post_entry(conn, reversal)
        assert await check_invariants(conn) == []
        await conn.execute(
            "UPDATE refunds SET status = 'FAILED' WHERE refund_id = $1", reversal.refund_id
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"capture journal capture:{payment_id} belongs to payment {payment_id}, which is FAILED",
        f"refund journal refund:{payment_id}:{reversal.refund_id} has no PROCESSED refund (FAILED)",
    ]


async def test_invariants_report_an_emi_payment_without_its_discount(pool: asyncpg.Pool) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 600_000, "CARD")
        plan = next(p for p in emi.plans_for(600_000) if p.merchant_discount_paisa)
        await conn.execute(
            "UPDATE payments SET payment_details = $2 WHERE payment_id = $1",
            payment_id,
            {"emi_plan_id": plan.plan_id, "brand": "VISA"},
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"payment {payment_id} (SUCCESS, EMI plan {plan.plan_id}) has 0 EMI discount journals"
        f" of 0 paisa; its plan gives {plan.merchant_discount_paisa}"
    ]


async def test_invariants_report_a_settlement_of_more_than_was_captured(
    pool: asyncpg.Pool,
) -> None:
    async with rolled_back(pool) as conn:
        merchant_id = await new_merchant(conn)
        payment_id, fee = await capture(conn, merchant_id, 10_000)
        await post_entry(
            conn,
            payment_settlement_entry(
                payment_id=payment_id,
                merchant_id=merchant_id,
                provider=PROVIDER,
                currency="INR",
                amount_paisa=10_100,
                fee=fee,
            ),
        )
        problems = await check_invariants(conn)
    assert problems == [
        f"settlement journal settlement:{payment_id} moves 10100 paisa of"
        f" provider_clearing:{PROVIDER}:INR; capture:{payment_id} booked 10000 there"
    ]


async def test_settlement_lines_post_once_and_keep_the_provider_receivable_explained(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, fee = await capture(conn, merchant_id, 40_000)
    before = {b.provider: b for b in await provider_balances(pool)}[PROVIDER]
    line = SettlementLine(
        line_key=f"setl_unit:{payment_id}",
        provider=PROVIDER,
        payment_id=payment_id,
        refund_id=None,
        type="PAYMENT",
        amount_paisa=40_000,
        fee_paisa=fee.fee_paisa,
        tax_paisa=fee.tax_paisa,
        settlement_id="setl_unit",
        utr="SBXN1",
    )

    results = await asyncio.gather(*(post_settlement_line(pool, line) for _ in range(5)))

    assert sorted(r.already_posted for r in results) == [False, True, True, True, True]
    assert {r.journal_id for r in results} == {f"settlement:{payment_id}"}
    (after,) = await provider_balances(pool, PROVIDER)
    assert after.settled_paisa - before.settled_paisa == 40_000
    assert after.bank_paisa - before.bank_paisa == 40_000 - fee.total
    assert after.fees_paisa - before.fees_paisa == fee.total
    assert after.receivable_paisa == (
        after.captured_paisa - after.refunded_paisa - after.adjusted_paisa - after.settled_paisa
    )
    assert await check_invariants(pool) == []


async def test_the_same_settlement_line_under_a_new_key_answers_the_first_posting(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, fee = await capture(conn, merchant_id, 12_000)
    first = SettlementLine(
        line_key=f"checksum1:{payment_id}",
        provider=PROVIDER,
        payment_id=payment_id,
        refund_id=None,
        type="PAYMENT",
        amount_paisa=12_000,
        fee_paisa=fee.fee_paisa,
        tax_paisa=fee.tax_paisa,
        settlement_id="setl_day",
        utr="SBXN7",
    )
    posted = await post_settlement_line(pool, first)
    (before,) = await provider_balances(pool, PROVIDER)

    refetched = await post_settlement_line(pool, replace(first, line_key=f"checksum2:{payment_id}"))
    with pytest.raises(FailedPrecondition, match="already settled by settlement setl_day"):
        await post_settlement_line(
            pool, replace(first, line_key=f"checksum3:{payment_id}", settlement_id="setl_next")
        )
    with pytest.raises(FailedPrecondition, match="already settled"):
        await post_settlement_line(
            pool, replace(first, line_key=f"checksum4:{payment_id}", fee_paisa=fee.fee_paisa + 1)
        )

    assert (posted.already_posted, refetched.already_posted) == (False, True)
    assert refetched.journal_id == posted.journal_id
    assert await provider_balances(pool, PROVIDER) == [before]


async def new_dispute(
    conn: asyncpg.Connection, payment_id: str, merchant_id: str, amount: int, status: str
) -> str:
    """A dispute row as the orchestrator writes it (NEEDS_RESPONSE, then moved to `status`)."""
    dispute_id = new_id("DSP")
    await conn.execute(
        "INSERT INTO disputes (dispute_id, payment_id, merchant_id, provider,"
        " provider_reference, amount_paisa, currency, reason_code, status, respond_by,"
        " fee_paisa, tax_paisa) VALUES ($1, $2, $3, $4, $1, $5, 'INR', '4853',"
        " 'NEEDS_RESPONSE', now() + interval '7 days', 15000, 2700)",
        dispute_id,
        payment_id,
        merchant_id,
        PROVIDER,
        amount,
    )
    if status != "NEEDS_RESPONSE":
        await conn.execute(
            "UPDATE disputes SET status = 'UNDER_REVIEW' WHERE dispute_id = $1", dispute_id
        )
        await conn.execute(
            "UPDATE disputes SET status = $2, resolved_at = now() WHERE dispute_id = $1",
            dispute_id,
            status,
        )
    return dispute_id


def chargeback_of(payment_id: str, dispute_id: str, merchant_id: str, amount: int) -> JournalEntry:
    return dispute_opened_entry(
        payment_id=payment_id,
        dispute_id=dispute_id,
        merchant_id=merchant_id,
        provider=PROVIDER,
        currency="INR",
        amount_paisa=amount,
        fee=dispute_fee(DEFAULT_PRICING["CARD"]),
    )


async def test_a_dispute_debits_amount_and_fee_and_a_win_gives_back_the_amount(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, fee = await capture(conn, merchant_id, 100_000)
        async with conn.transaction():
            dispute_id = await new_dispute(conn, payment_id, merchant_id, 60_000, "WON")
            opened = chargeback_of(payment_id, dispute_id, merchant_id, 60_000)
            assert await post_entry(conn, opened)
            assert not await post_entry(conn, opened)  # the same chargeback, once
            won = dispute_won_entry(
                payment_id=payment_id,
                dispute_id=dispute_id,
                merchant_id=merchant_id,
                provider=PROVIDER,
                currency="INR",
                amount_paisa=60_000,
            )
            assert await post_entry(conn, won)
        balance = await merchant_balance(conn, merchant_id, "INR")
        assert await check_invariants(conn) == []
    assert balance.payable_paisa == 100_000 - fee.total - 17_700


async def test_invariants_report_a_dispute_without_its_chargeback_or_a_won_one_unreversed(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 100_000)
    async with rolled_back(pool) as conn:
        bare = await new_dispute(conn, payment_id, merchant_id, 10_000, "NEEDS_RESPONSE")
        won = await new_dispute(conn, payment_id, merchant_id, 20_000, "WON")
        await post_entry(conn, chargeback_of(payment_id, won, merchant_id, 20_000))
        problems = await check_invariants(conn)
    assert sorted(problems) == sorted(
        [
            f"dispute {bare} (NEEDS_RESPONSE, 10000 paisa + fee 15000 + tax 2700) has chargeback"
            " journals none and reversals none",
            f"dispute {won} (WON, 20000 paisa + fee 15000 + tax 2700) has chargeback journals"
            " 37700 and reversals none",
        ]
    )


async def test_invariants_report_disputes_and_refunds_beyond_the_amount(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        merchant_id = await new_merchant(conn)
        payment_id, _ = await capture(conn, merchant_id, 1_000)
    async with rolled_back(pool) as conn:
        entry = refund_of(payment_id, merchant_id, 600)
        await insert_refund(conn, entry, "PROCESSED")
        await post_entry(conn, entry)
        await conn.execute(
            "UPDATE payments SET status = 'PARTIALLY_REFUNDED' WHERE payment_id = $1", payment_id
        )
        dispute_id = await new_dispute(conn, payment_id, merchant_id, 401, "LOST")
        await post_entry(conn, chargeback_of(payment_id, dispute_id, merchant_id, 401))
        problems = await check_invariants(conn)
    assert problems == [
        f"payment {payment_id}: its disputes not won (401 paisa) and processed refunds (600)"
        " take back more than its 1000"
    ]
