"""The ledger and pricing tables in PostgreSQL (the orchestrator's schema, via search_path).

Entries come from orchestrator/domain/ledger.py; this module only stores and sums them.
`post_entry` runs in the caller's transaction, so a payment's status change and its journal
commit together (and the database's balance check runs at that commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from gateway_core.errors import GatewayError
from gateway_core.fees import Pricing
from orchestrator.connectors.card import emi
from orchestrator.domain.ledger import JournalEntry

# Problems reported per check at most: a systematic bug must not flood the report.
MAX_PROBLEMS_PER_CHECK = 50

# Reads work on a connection (inside a transaction) or straight on the pool.
Queryable: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class MerchantBalance:
    """A merchant's ledger totals in one currency (mirrors paygate.merchants.v1.MerchantBalance)."""

    merchant_id: str
    currency: str
    payable_paisa: int  # owed to the merchant, not yet settled: captured - fees - tax - refunded
    captured_paisa: int
    fees_paisa: int
    tax_paisa: int
    refunded_paisa: int


async def post_entry(conn: asyncpg.Connection, entry: JournalEntry) -> bool:
    """Write `entry` in the caller's transaction, creating the accounts it needs.

    Returns False, writing nothing, when the same (kind, payment, refund) was already posted:
    replays are harmless. A concurrent poster of the same entry waits for the first to commit.
    """
    if not conn.is_in_transaction():
        # Outside one, the journal row would commit alone and fail the balance check.
        raise RuntimeError("post_entry must run inside the caller's transaction")
    inserted = await conn.fetchval(
        "INSERT INTO journal_entries"
        " (journal_id, kind, payment_id, refund_id, merchant_id, currency, dispute_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING journal_id",
        entry.journal_id,
        entry.kind.value,
        entry.payment_id,
        entry.refund_id,
        entry.merchant_id,
        entry.currency,
        entry.dispute_id,
    )
    if inserted is None:
        return False
    # In id order, so two transactions creating the same new accounts cannot deadlock.
    accounts = sorted({p.account for p in entry.postings}, key=lambda a: a.account_id)
    await conn.execute(
        "INSERT INTO ledger_accounts (account_id, kind, merchant_id, currency)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
        " ON CONFLICT (account_id) DO NOTHING",
        [a.account_id for a in accounts],
        [a.kind.value for a in accounts],
        [a.merchant_id for a in accounts],
        [a.currency for a in accounts],
    )
    await conn.execute(
        "INSERT INTO postings (journal_id, account_id, amount_paisa)"
        " SELECT $1, * FROM unnest($2::text[], $3::bigint[])",
        entry.journal_id,
        [p.account.account_id for p in entry.postings],
        [p.amount_paisa for p in entry.postings],
    )
    return True


async def load_pricing(db: Queryable) -> dict[str, Pricing]:
    """The pricing table, by payment method."""
    rows = await db.fetch(
        "SELECT method, rate_bps, fixed_paisa, gst_bps, dispute_fee_paisa FROM pricing"
    )
    return {row["method"]: Pricing(**dict(row)) for row in rows}


async def merchant_balance(db: Queryable, merchant_id: str, currency: str) -> MerchantBalance:
    """The merchant's totals over every journal posted for it (zeros if there is none)."""
    row = await db.fetchrow(
        """
        SELECT
            coalesce(sum(p.amount_paisa) FILTER (WHERE a.kind = 'merchant_payable'), 0)
                AS payable,
            coalesce(sum(p.amount_paisa)
                FILTER (WHERE j.kind = 'capture' AND p.amount_paisa > 0), 0) AS captured,
            coalesce(sum(p.amount_paisa) FILTER (WHERE a.kind = 'fee_revenue'), 0) AS fees,
            coalesce(sum(p.amount_paisa) FILTER (WHERE a.kind = 'gst_payable'), 0) AS tax,
            coalesce(sum(p.amount_paisa)
                FILTER (WHERE j.kind = 'refund' AND a.kind = 'merchant_payable'), 0) AS refunded
        FROM journal_entries j
        JOIN postings p ON p.journal_id = j.journal_id
        JOIN ledger_accounts a ON a.account_id = p.account_id
        WHERE j.merchant_id = $1 AND j.currency = $2
        """,
        merchant_id,
        currency,
    )
    assert row is not None
    # Liabilities and revenue are credits (negative); the balance shows them as amounts owed.
    return MerchantBalance(
        merchant_id=merchant_id,
        currency=currency,
        payable_paisa=-int(row["payable"]),
        captured_paisa=int(row["captured"]),
        fees_paisa=-int(row["fees"]),
        tax_paisa=-int(row["tax"]),
        refunded_paisa=int(row["refunded"]),
    )


async def check_invariants(db: Queryable) -> list[str]:
    """Every way the ledger disagrees with itself, with the payments or with the refunds, in
    words.

    An empty list means healthy. It reads the whole ledger: for a periodic job, an admin
    endpoint and tests, not for a request path.
    """
    problems: list[str] = []
    for sql in _CHECKS:
        rows = await db.fetch(sql, MAX_PROBLEMS_PER_CHECK)
        problems.extend(row["problem"] for row in rows)
    problems.extend(await _emi_discount_problems(db))
    return problems


async def _emi_discount_problems(db: Queryable) -> list[str]:
    """Each captured no-cost EMI payment has exactly its plan's discount journal; nothing
    else has one. The plan's discount comes from connectors/card/emi.py, so this check is in
    Python."""
    rows = await db.fetch(
        """
        SELECT pay.payment_id, pay.amount_paisa, pay.status,
               pay.payment_details->>'emi_plan_id' AS plan_id,
               coalesce(pay.payment_details->>'brand', '') AS brand,
               count(t.journal_id) AS journals, coalesce(sum(t.amount_paisa), 0) AS discount
        FROM payments pay
        LEFT JOIN journal_totals t
          ON t.payment_id = pay.payment_id AND t.kind = 'adjustment'
             AND t.journal_id = 'adjustment:' || pay.payment_id || ':emi_discount'
        WHERE coalesce(pay.payment_details->>'emi_plan_id', '') <> ''
           OR t.journal_id IS NOT NULL
        GROUP BY pay.payment_id
        """
    )
    problems: list[str] = []
    for row in rows:
        expected = 0
        if row["plan_id"] and row["status"] in ("SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"):
            try:
                plan = emi.choose(
                    row["plan_id"], row["amount_paisa"], row["brand"], "payment_details.emi_plan_id"
                )
            except GatewayError:
                problems.append(
                    f"payment {row['payment_id']} has unknown EMI plan {row['plan_id']}"
                )
                continue
            expected = plan.merchant_discount_paisa
        found = (int(row["journals"]), int(row["discount"]))
        if found != ((1, expected) if expected else (0, 0)):
            problems.append(
                f"payment {row['payment_id']} ({row['status']}, EMI plan {row['plan_id']}) has"
                f" {found[0]} EMI discount journals of {found[1]} paisa; its plan gives"
                f" {expected}"
            )
        if len(problems) >= MAX_PROBLEMS_PER_CHECK:
            break
    return problems


# Each query returns one `problem` per row, at most $1 rows. `journal_totals` is a view
# (migrations/0002_ledger.sql). Captured statuses (domain/states.py): SUCCESS,
# PARTIALLY_REFUNDED, REFUNDED; a payment reaches them through exactly one capture.
_CHECKS = [
    """
    SELECT format('journal %s has %s postings summing to %s paisa (needs 2 or more, summing'
                  ' to 0)', journal_id, lines, sum_paisa) AS problem
    FROM journal_totals
    WHERE sum_paisa <> 0 OR lines < 2
    ORDER BY journal_id
    LIMIT $1""",
    """
    SELECT format('journal %s (%s) posts to %s, kept in %s', j.journal_id, j.currency,
                  a.account_id, a.currency) AS problem
    FROM postings p
    JOIN journal_entries j ON j.journal_id = p.journal_id
    JOIN ledger_accounts a ON a.account_id = p.account_id
    WHERE a.currency <> j.currency
    ORDER BY p.id
    LIMIT $1""",
    """
    SELECT format('all %s postings sum to %s paisa, not 0', j.currency, sum(p.amount_paisa))
        AS problem
    FROM postings p
    JOIN journal_entries j ON j.journal_id = p.journal_id
    GROUP BY j.currency
    HAVING sum(p.amount_paisa) <> 0
    ORDER BY j.currency
    LIMIT $1""",
    """
    SELECT format('payment %s is %s with %s capture journals, not 1', pay.payment_id,
                  pay.status, count(j.journal_id)) AS problem
    FROM payments pay
    LEFT JOIN journal_entries j ON j.payment_id = pay.payment_id AND j.kind = 'capture'
    WHERE pay.status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED')
    GROUP BY pay.payment_id
    HAVING count(j.journal_id) <> 1
    ORDER BY pay.payment_id
    LIMIT $1""",
    """
    SELECT format('capture journal %s belongs to payment %s, which is %s', j.journal_id,
                  pay.payment_id, pay.status) AS problem
    FROM journal_entries j
    JOIN payments pay ON pay.payment_id = j.payment_id
    WHERE j.kind = 'capture' AND pay.status NOT IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED')
      AND NOT EXISTS (
          SELECT 1 FROM refunds r WHERE r.payment_id = pay.payment_id AND r.kind = 'REVERSAL'
             AND r.status IN ('PENDING', 'PROCESSED'))
    ORDER BY j.journal_id
    LIMIT $1""",
    # A late success given back: its capture is booked (no fee), and so is the reversal.
    """
    SELECT format('payment %s is %s with a %s reversal but %s capture journals, not 1',
                  pay.payment_id, pay.status, r.status, count(j.journal_id)) AS problem
    FROM refunds r
    JOIN payments pay ON pay.payment_id = r.payment_id
    LEFT JOIN journal_entries j ON j.payment_id = pay.payment_id AND j.kind = 'capture'
    WHERE r.kind = 'REVERSAL' AND r.status IN ('PENDING', 'PROCESSED')
    GROUP BY pay.payment_id, r.refund_id
    HAVING count(j.journal_id) <> 1
    ORDER BY pay.payment_id
    LIMIT $1""",
    """
    SELECT format('payment %s is %s but has a reversal (%s): only closed payments are reversed',
                  pay.payment_id, pay.status, r.refund_id) AS problem
    FROM refunds r
    JOIN payments pay ON pay.payment_id = r.payment_id
    WHERE r.kind = 'REVERSAL' AND pay.status NOT IN ('FAILED', 'EXPIRED', 'CANCELLED')
    ORDER BY pay.payment_id
    LIMIT $1""",
    # Refund journals and PROCESSED refunds, one for one and amount for amount.
    """
    SELECT format('refund %s of payment %s is PROCESSED for %s paisa; its refund journals: %s',
                  r.refund_id, r.payment_id, r.amount_paisa,
                  coalesce(string_agg(t.amount_paisa::text, ', '), 'none')) AS problem
    FROM refunds r
    LEFT JOIN journal_totals t ON t.kind = 'refund' AND t.refund_id = r.refund_id
    WHERE r.status = 'PROCESSED'
    GROUP BY r.refund_id
    HAVING count(t.journal_id) <> 1 OR min(t.amount_paisa) <> r.amount_paisa
    ORDER BY r.refund_id
    LIMIT $1""",
    """
    SELECT format('refund journal %s has no PROCESSED refund (%s)', t.journal_id,
                  coalesce(r.status, 'no such refund')) AS problem
    FROM journal_totals t
    LEFT JOIN refunds r ON r.refund_id = t.refund_id AND r.payment_id = t.payment_id
    WHERE t.kind = 'refund' AND (r.refund_id IS NULL OR r.status <> 'PROCESSED')
    ORDER BY t.journal_id
    LIMIT $1""",
    # A payment's refund status agrees with what its merchant refunds add up to.
    """
    SELECT format('payment %s is %s, but its processed refunds total %s of %s paisa',
                  pay.payment_id, pay.status, coalesce(sum(r.amount_paisa), 0),
                  pay.amount_paisa) AS problem
    FROM payments pay
    LEFT JOIN refunds r ON r.payment_id = pay.payment_id AND r.status = 'PROCESSED'
                       AND r.kind = 'REFUND'
    WHERE pay.status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED')
    GROUP BY pay.payment_id
    HAVING (pay.status = 'SUCCESS' AND coalesce(sum(r.amount_paisa), 0) <> 0)
        OR (pay.status = 'PARTIALLY_REFUNDED'
            AND NOT coalesce(sum(r.amount_paisa), 0) BETWEEN 1 AND pay.amount_paisa - 1)
        OR (pay.status = 'REFUNDED' AND coalesce(sum(r.amount_paisa), 0) <> pay.amount_paisa)
    ORDER BY pay.payment_id
    LIMIT $1""",
    """
    SELECT format('capture journal %s moves %s %s for %s; payment %s is %s %s for %s',
                  t.journal_id, t.amount_paisa, t.currency, t.merchant_id, pay.payment_id,
                  pay.amount_paisa, pay.currency, pay.merchant_id) AS problem
    FROM journal_totals t
    JOIN payments pay ON pay.payment_id = t.payment_id
    WHERE t.kind = 'capture' AND (t.amount_paisa <> pay.amount_paisa
        OR t.merchant_id <> pay.merchant_id OR t.currency <> pay.currency)
    ORDER BY t.journal_id
    LIMIT $1""",
    """
    SELECT format('payment %s: %s refund journals total %s paisa, more than its %s',
                  pay.payment_id, count(*), sum(t.amount_paisa), pay.amount_paisa) AS problem
    FROM journal_totals t
    JOIN payments pay ON pay.payment_id = t.payment_id
    WHERE t.kind = 'refund'
    GROUP BY pay.payment_id
    HAVING sum(t.amount_paisa) > pay.amount_paisa
    ORDER BY pay.payment_id
    LIMIT $1""",
    # A settlement moves exactly what its capture (or refund) booked, on the same provider.
    """
    SELECT format('settlement journal %s moves %s paisa of %s; %s booked %s there', s.journal_id,
                  -sp.amount_paisa, sa.account_id, src.id,
                  coalesce(cp.amount_paisa::text, 'nothing')) AS problem
    FROM journal_entries s
    JOIN postings sp ON sp.journal_id = s.journal_id
    JOIN ledger_accounts sa ON sa.account_id = sp.account_id AND sa.kind = 'provider_clearing'
    CROSS JOIN LATERAL (SELECT CASE WHEN s.refund_id IS NULL THEN 'capture:' || s.payment_id
                        ELSE 'refund:' || s.payment_id || ':' || s.refund_id END AS id) src
    LEFT JOIN postings cp ON cp.journal_id = src.id AND cp.account_id = sp.account_id
    WHERE s.kind = 'settlement' AND (cp.amount_paisa IS NULL OR cp.amount_paisa <> -sp.amount_paisa)
    ORDER BY s.journal_id
    LIMIT $1""",
    # Each dispute has one chargeback journal of its amount, fee and GST, and a reversal of its
    # amount exactly when it was WON; no dispute journal without its dispute.
    """
    SELECT format('dispute %s (%s, %s paisa + fee %s + tax %s) has chargeback journals %s and'
                  ' reversals %s', d.dispute_id, d.status, d.amount_paisa, d.fee_paisa,
                  d.tax_paisa, coalesce(string_agg(t.amount_paisa::text, ', ')
                      FILTER (WHERE t.kind = 'chargeback'), 'none'),
                  coalesce(string_agg(t.amount_paisa::text, ', ')
                      FILTER (WHERE t.kind = 'chargeback_reversal'), 'none')) AS problem
    FROM disputes d
    LEFT JOIN journal_entries j ON j.dispute_id = d.dispute_id
    LEFT JOIN journal_totals t ON t.journal_id = j.journal_id
    GROUP BY d.dispute_id
    HAVING count(*) FILTER (WHERE t.kind = 'chargeback') <> 1
        OR min(t.amount_paisa) FILTER (WHERE t.kind = 'chargeback')
           <> d.amount_paisa + d.fee_paisa + d.tax_paisa
        OR count(*) FILTER (WHERE t.kind = 'chargeback_reversal')
           <> CASE WHEN d.status = 'WON' THEN 1 ELSE 0 END
        OR coalesce(min(t.amount_paisa) FILTER (WHERE t.kind = 'chargeback_reversal'),
                    d.amount_paisa) <> d.amount_paisa
    ORDER BY d.dispute_id
    LIMIT $1""",
    """
    SELECT format('payment %s: its disputes not won (%s paisa) and processed refunds (%s) take'
                  ' back more than its %s', pay.payment_id, held.disputed, coalesce(r.refunded, 0),
                  pay.amount_paisa) AS problem
    FROM payments pay
    JOIN (SELECT payment_id, sum(amount_paisa) AS disputed FROM disputes
          WHERE status <> 'WON' GROUP BY payment_id) held ON held.payment_id = pay.payment_id
    LEFT JOIN (SELECT payment_id, sum(amount_paisa) AS refunded FROM refunds
               WHERE status = 'PROCESSED' GROUP BY payment_id) r ON r.payment_id = pay.payment_id
    WHERE held.disputed + coalesce(r.refunded, 0) > pay.amount_paisa
    ORDER BY pay.payment_id
    LIMIT $1""",
    """
    SELECT format('payment %s shows fee %s + tax %s; its capture journal charged %s + %s',
                  pay.payment_id, pay.fees_paisa, pay.tax_paisa, t.fee_paisa, t.tax_paisa)
        AS problem
    FROM journal_totals t
    JOIN payments pay ON pay.payment_id = t.payment_id
    WHERE t.kind = 'capture' AND (t.fee_paisa <> pay.fees_paisa OR t.tax_paisa <> pay.tax_paisa)
    ORDER BY pay.payment_id
    LIMIT $1""",
]
