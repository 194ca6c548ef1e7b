"""Settlement lines in the ledger: reconciliation's matched lines, posted once each.

A line moves money the ledger already holds as receivable from a provider (a capture's
provider_clearing debit, less the refunds credited to it) into the bank. So a line is posted
only for what the ledger holds: the captured amount of a captured payment, or the amount of a
PROCESSED refund, booked against the same provider. Reconciliation decides what matched; this
module refuses anything that would make the ledger disagree with itself.

Idempotency: one line per `line_key` (settlement_lines, whose repeat answers the first posting)
and one settlement per payment and per refund (the journal ids, journal_entries_once_idx). The
same line of the same settlement under another key (a day's file fetched again after it grew,
so with a new checksum) answers the first posting too; a payment settled again by another
settlement, or for other amounts, is refused (ALREADY_SETTLED): never posted twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import asyncpg

from gateway_core.errors import AlreadyExists, FailedPrecondition, NotFound
from gateway_core.fees import Fee
from orchestrator import ledger_store
from orchestrator.domain.ledger import (
    AccountKind,
    JournalEntry,
    JournalKind,
    payment_settlement_entry,
    refund_settlement_entry,
)
from orchestrator.ledger_store import Queryable

LineType = Literal["PAYMENT", "REFUND"]


@dataclass(frozen=True)
class SettlementLine:
    """One line of a provider's settlement file, as reconciliation matched it."""

    line_key: str
    provider: str
    payment_id: str
    refund_id: str | None  # REFUND lines only
    type: LineType
    amount_paisa: int
    fee_paisa: int
    tax_paisa: int
    settlement_id: str
    utr: str


@dataclass(frozen=True)
class PostedLine:
    journal_id: str
    already_posted: bool


@dataclass(frozen=True)
class ProviderBalance:
    """A provider's receivable and how it came to be, in one currency."""

    provider: str
    currency: str
    captured_paisa: int = 0
    refunded_paisa: int = 0
    adjusted_paisa: int = 0
    settled_paisa: int = 0
    receivable_paisa: int = 0
    bank_paisa: int = 0
    fees_paisa: int = 0


async def post_settlement_line(pool: asyncpg.Pool, line: SettlementLine) -> PostedLine:
    """Post `line` once: the same key again answers the first posting and writes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        known = await _posted(conn, line)
        if known is not None:
            return known
        entry = await _entry_for(conn, line)
        posted_now = await ledger_store.post_entry(conn, entry)
        if not posted_now:
            # Settled before: under this key by a concurrent call that has committed since (its
            # answer), or under another key: the same line again, or a second settlement.
            known = await _posted(conn, line)
            if known is not None:
                return known
            await _check_same_settlement(conn, line, entry.journal_id)
        recorded = await conn.fetchval(
            "INSERT INTO settlement_lines (line_key, journal_id, provider, payment_id,"
            " refund_id, type, amount_paisa, fee_paisa, tax_paisa, settlement_id, utr)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (line_key) DO NOTHING RETURNING line_key",
            line.line_key,
            entry.journal_id,
            line.provider,
            line.payment_id,
            line.refund_id,
            line.type,
            line.amount_paisa,
            line.fee_paisa,
            line.tax_paisa,
            line.settlement_id,
            line.utr,
        )
        if recorded is None:
            # A concurrent call took the key for another line; this one's journal rolls back.
            raise _key_reused(line.line_key)
        return PostedLine(entry.journal_id, already_posted=not posted_now)


async def provider_balances(db: Queryable, provider: str = "") -> list[ProviderBalance]:
    """Every provider's balances (or `provider`'s), by provider and currency."""
    rows = await db.fetch(
        """
        SELECT a.account_id, a.kind, j.kind AS journal_kind, sum(p.amount_paisa) AS total
        FROM postings p
        JOIN ledger_accounts a ON a.account_id = p.account_id
        JOIN journal_entries j ON j.journal_id = p.journal_id
        WHERE a.kind IN ('provider_clearing', 'bank', 'provider_fees')
          AND ($1 = '' OR split_part(a.account_id, ':', 2) = $1)
        GROUP BY a.account_id, a.kind, j.kind
        """,
        provider,
    )
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        owner, currency = row["account_id"].split(":", 1)[1].rsplit(":", 1)
        amount = int(row["total"])
        sums = totals[(owner, currency)]
        kind, journal = AccountKind(row["kind"]), JournalKind(row["journal_kind"])
        if kind is AccountKind.BANK:
            sums["bank"] += amount
        elif kind is AccountKind.PROVIDER_FEES:
            sums["fees"] += amount
        else:
            sums["receivable"] += amount
            # Debits of the receivable are positive: captures add, the rest take away.
            bucket = {
                JournalKind.CAPTURE: "captured",
                JournalKind.REFUND: "refunded",
                JournalKind.SETTLEMENT: "settled",
            }.get(journal, "adjusted")
            sums[bucket] += amount if bucket == "captured" else -amount
    return [
        ProviderBalance(
            provider=owner,
            currency=currency,
            captured_paisa=sums["captured"],
            refunded_paisa=sums["refunded"],
            adjusted_paisa=sums["adjusted"],
            settled_paisa=sums["settled"],
            receivable_paisa=sums["receivable"],
            bank_paisa=sums["bank"],
            fees_paisa=sums["fees"],
        )
        for (owner, currency), sums in sorted(totals.items())
    ]


async def _posted(conn: asyncpg.Connection, line: SettlementLine) -> PostedLine | None:
    """The first posting of `line.line_key`, if any; AlreadyExists if it was another line."""
    row = await conn.fetchrow("SELECT * FROM settlement_lines WHERE line_key = $1", line.line_key)
    if row is None:
        return None
    stored = SettlementLine(
        line_key=row["line_key"],
        provider=row["provider"],
        payment_id=row["payment_id"],
        refund_id=row["refund_id"],
        type=row["type"],
        amount_paisa=int(row["amount_paisa"]),
        fee_paisa=int(row["fee_paisa"]),
        tax_paisa=int(row["tax_paisa"]),
        settlement_id=row["settlement_id"],
        utr=row["utr"],
    )
    if stored != line:
        raise _key_reused(line.line_key)
    return PostedLine(row["journal_id"], already_posted=True)


async def _check_same_settlement(
    conn: asyncpg.Connection, line: SettlementLine, journal_id: str
) -> None:
    """Return if `journal_id` was posted for this very line (same settlement, same amounts);
    raise ALREADY_SETTLED if the payment or refund was settled otherwise."""
    first = await conn.fetchrow(
        "SELECT * FROM settlement_lines WHERE journal_id = $1 ORDER BY posted_at LIMIT 1",
        journal_id,
    )
    fields = ("provider", "type", "amount_paisa", "fee_paisa", "tax_paisa", "settlement_id", "utr")
    if first is not None and all(first[f] == getattr(line, f) for f in fields):
        return
    what = f"refund {line.refund_id}" if line.refund_id else f"payment {line.payment_id}"
    settled_by = f"settlement {first['settlement_id']}" if first is not None else "an earlier line"
    raise FailedPrecondition(
        f"{what} is already settled by {settled_by} (journal {journal_id})",
        reason="ALREADY_SETTLED",
    )


async def _entry_for(conn: asyncpg.Connection, line: SettlementLine) -> JournalEntry:
    """The settlement journal of `line`, once the ledger shows it holds what the line settles."""
    payment = await conn.fetchrow(
        "SELECT merchant_id, currency FROM payments WHERE payment_id = $1", line.payment_id
    )
    if payment is None:
        raise NotFound(f"payment {line.payment_id} not found", reason="PAYMENT_NOT_FOUND")
    if line.type == "PAYMENT":
        source = f"capture:{line.payment_id}"
        what = f"payment {line.payment_id}"
    else:
        refund = await conn.fetchrow(
            "SELECT status FROM refunds WHERE refund_id = $1 AND payment_id = $2",
            line.refund_id,
            line.payment_id,
        )
        if refund is None:
            raise NotFound(
                f"payment {line.payment_id} has no refund {line.refund_id}",
                reason="REFUND_NOT_FOUND",
            )
        if refund["status"] != "PROCESSED":
            raise FailedPrecondition(
                f"refund {line.refund_id} is {refund['status']}; only a PROCESSED refund settles",
                reason="REFUND_NOT_PROCESSED",
            )
        source = f"refund:{line.payment_id}:{line.refund_id}"
        what = f"refund {line.refund_id}"
    # What the capture (or refund) journal booked against the provider's receivable.
    booked = await conn.fetchrow(
        "SELECT a.account_id, abs(p.amount_paisa) AS amount_paisa FROM postings p"
        " JOIN ledger_accounts a ON a.account_id = p.account_id"
        " WHERE p.journal_id = $1 AND a.kind = 'provider_clearing'",
        source,
    )
    if booked is None:
        raise FailedPrecondition(
            f"{what} is not booked in the ledger (not captured)", reason="NOT_CAPTURED"
        )
    booked_provider = booked["account_id"].split(":", 1)[1].rsplit(":", 1)[0]
    if booked_provider != line.provider:
        raise FailedPrecondition(
            f"{what} went through {booked_provider}, not {line.provider}",
            reason="PROVIDER_MISMATCH",
        )
    if int(booked["amount_paisa"]) != line.amount_paisa:
        raise FailedPrecondition(
            f"{what} is booked at {booked['amount_paisa']} paisa; the line settles"
            f" {line.amount_paisa}",
            reason="AMOUNT_MISMATCH",
        )
    if line.type == "PAYMENT":
        return payment_settlement_entry(
            payment_id=line.payment_id,
            merchant_id=payment["merchant_id"],
            provider=line.provider,
            currency=payment["currency"],
            amount_paisa=line.amount_paisa,
            fee=Fee(line.fee_paisa, line.tax_paisa),
        )
    assert line.refund_id is not None
    return refund_settlement_entry(
        payment_id=line.payment_id,
        refund_id=line.refund_id,
        merchant_id=payment["merchant_id"],
        provider=line.provider,
        currency=payment["currency"],
        amount_paisa=line.amount_paisa,
    )


def _key_reused(line_key: str) -> AlreadyExists:
    return AlreadyExists(
        f"line_key {line_key!r} was posted for another line; each line needs a key of its own",
        reason="LINE_KEY_REUSED",
    )
