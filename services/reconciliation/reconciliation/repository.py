"""Reads of reconciliation's tables: runs, exceptions and the settlement report's figures.

Writes happen in `reconciliation.ingest` (files, lines, runs, exceptions),
`reconciliation.events` (the books) and `reconciliation.ledger` (postings).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from gateway_core.errors import Conflict, NotFound

_RUN = """
SELECT r.*, f.checksum_sha256, f.settlement_id, f.utr,
       (SELECT count(*) FROM settlement_lines l
        WHERE l.settlement_file_id = r.settlement_file_id AND l.posted_at IS NOT NULL) AS posted
FROM reconciliation_runs r JOIN settlement_files f USING (settlement_file_id)
"""


async def get_run(conn: asyncpg.Connection, run_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(_RUN + " WHERE r.run_id = $1", run_id)
    if row is None:
        raise NotFound(f"no reconciliation run {run_id}", reason="RUN_NOT_FOUND")
    return row


async def list_runs(
    conn: asyncpg.Connection,
    *,
    providers: Sequence[str] | None,
    day: date | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first (run ids sort by creation); `after`: the last run id of the previous page."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _RUN
        + """
        WHERE ($1::text[] IS NULL OR r.provider = ANY($1))
          AND ($2::date IS NULL OR r.settlement_date = $2)
          AND ($3::text IS NULL OR r.run_id < $3)
        ORDER BY r.run_id DESC LIMIT $4
        """,
        list(providers) if providers is not None else None,
        day,
        after,
        limit,
    )
    return rows


async def list_exceptions(
    conn: asyncpg.Connection,
    *,
    outcome: str | None,
    providers: Sequence[str] | None,
    day: date | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM reconciliation_exceptions
        WHERE ($1::text IS NULL OR type = $1)
          AND ($2::text[] IS NULL OR provider = ANY($2))
          AND ($3::date IS NULL OR settlement_date = $3)
          AND ($4::text IS NULL OR status = $4)
          AND ($5::text IS NULL OR exception_id < $5)
        ORDER BY exception_id DESC LIMIT $6
        """,
        outcome,
        list(providers) if providers is not None else None,
        day,
        status,
        after,
        limit,
    )
    return rows


async def resolve_exception(
    conn: asyncpg.Connection, exception_id: str, note: str, resolved_by: str
) -> asyncpg.Record:
    async with conn.transaction():
        current = await conn.fetchrow(
            "SELECT status FROM reconciliation_exceptions WHERE exception_id = $1 FOR UPDATE",
            exception_id,
        )
        if current is None:
            raise NotFound(f"no exception {exception_id}", reason="EXCEPTION_NOT_FOUND")
        if current["status"] == "RESOLVED":
            raise Conflict(
                f"exception {exception_id} is already resolved",
                reason="EXCEPTION_ALREADY_RESOLVED",
            )
        row: asyncpg.Record = await conn.fetchrow(
            """
            UPDATE reconciliation_exceptions
            SET status = 'RESOLVED', resolution_note = $2, resolved_by = $3, resolved_at = now()
            WHERE exception_id = $1 RETURNING *
            """,
            exception_id,
            note,
            resolved_by,
        )
        return row


async def providers_of_method(conn: asyncpg.Connection, method: str) -> list[str]:
    """The providers our books have seen serve `method`, and those whose files had it."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT provider FROM book_payments WHERE method = $1 AND provider <> ''
        UNION
        SELECT DISTINCT f.provider FROM settlement_files f
        WHERE EXISTS (SELECT 1 FROM settlement_lines l
                      WHERE l.settlement_file_id = f.settlement_file_id AND l.method = $1)
        ORDER BY 1
        """,
        method,
    )
    return [row["provider"] for row in rows]


async def providers_of_day(conn: asyncpg.Connection, day: date) -> list[str]:
    """Providers with a file for `day` or items of ours that should settle that day."""
    rows = await conn.fetch(
        """
        SELECT provider FROM reconciliation_runs WHERE settlement_date = $1
        UNION SELECT provider FROM book_payments WHERE settlement_date = $1 AND provider <> ''
        UNION SELECT provider FROM book_refunds WHERE settlement_date = $1 AND provider <> ''
        ORDER BY 1
        """,
        day,
    )
    return [row["provider"] for row in rows]


@dataclass(frozen=True)
class DayFigures:
    """One provider's figures for one settlement day."""

    provider: str
    method: str
    run: asyncpg.Record | None  # the latest run of the day, with its file's fields
    expected_gross_paisa: int
    expected_refunds_paisa: int
    expected_fees_paisa: int
    expected_tax_paisa: int
    expected_chargebacks_paisa: int
    # Outcome -> (count, amount) for the run's lines and the day's unsettled items.
    outcomes: dict[str, tuple[int, int]]


_BOOKS_OF_DAY = """
SELECT
  (SELECT coalesce(sum(captured_paisa), 0) FROM book_payments
   WHERE provider = $1 AND settlement_date = $2 AND captured_paisa > 0) AS gross,
  (SELECT coalesce(sum(fees_paisa), 0) FROM book_payments
   WHERE provider = $1 AND settlement_date = $2 AND captured_paisa > 0) AS fees,
  (SELECT coalesce(sum(tax_paisa), 0) FROM book_payments
   WHERE provider = $1 AND settlement_date = $2 AND captured_paisa > 0) AS tax,
  (SELECT coalesce(sum(amount_paisa), 0) FROM book_refunds
   WHERE provider = $1 AND settlement_date = $2) AS refunds,
  (SELECT coalesce(sum(amount_paisa), 0) FROM book_disputes
   WHERE provider = $1 AND (opened_at AT TIME ZONE 'Asia/Kolkata')::date = $2) AS chargebacks,
  (SELECT min(method) FROM book_payments WHERE provider = $1) AS method
"""

_LINE_OUTCOMES = """
SELECT outcome, count(*) AS n, coalesce(sum(amount_paisa), 0) AS amount
FROM settlement_lines WHERE settlement_file_id = $1 GROUP BY outcome
"""

# The day's items no line has settled: MISSING_IN_FILE once declared, else EXPECTED.
_UNSETTLED_OF_DAY = """
SELECT CASE WHEN missing_run_id IS NULL THEN 'EXPECTED' ELSE 'MISSING_IN_FILE' END AS outcome,
       count(*) AS n, coalesce(sum(amount), 0) AS amount
FROM (
    SELECT b.captured_paisa AS amount, b.missing_run_id FROM book_payments b
    WHERE b.provider = $1 AND b.settlement_date = $2 AND b.captured_paisa > 0
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.payment_id)
    UNION ALL
    SELECT b.amount_paisa, b.missing_run_id FROM book_refunds b
    WHERE b.provider = $1 AND b.settlement_date = $2
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.refund_id)
) unsettled
GROUP BY 1
"""


async def day_figures(conn: asyncpg.Connection, provider: str, day: date) -> DayFigures:
    run = await conn.fetchrow(
        _RUN + " WHERE r.provider = $1 AND r.settlement_date = $2 ORDER BY r.run_id DESC LIMIT 1",
        provider,
        day,
    )
    books = await conn.fetchrow(_BOOKS_OF_DAY, provider, day)
    outcomes: dict[str, tuple[int, int]] = {}
    if run is not None:
        for row in await conn.fetch(_LINE_OUTCOMES, run["settlement_file_id"]):
            outcomes[row["outcome"]] = (row["n"], int(row["amount"]))
    for row in await conn.fetch(_UNSETTLED_OF_DAY, provider, day):
        outcomes[row["outcome"]] = (row["n"], int(row["amount"]))
    method = books["method"] or ""
    if not method and run is not None:
        method = (
            await conn.fetchval(
                "SELECT method FROM settlement_lines WHERE settlement_file_id = $1 LIMIT 1",
                run["settlement_file_id"],
            )
            or ""
        )
    return DayFigures(
        provider=provider,
        method=method,
        run=run,
        expected_gross_paisa=int(books["gross"]),
        expected_refunds_paisa=int(books["refunds"]),
        expected_fees_paisa=int(books["fees"]),
        expected_tax_paisa=int(books["tax"]),
        expected_chargebacks_paisa=int(books["chargebacks"]),
        outcomes=outcomes,
    )


_REPORT_ROWS = """
SELECT f.provider, f.settlement_date, f.settlement_id, f.utr, l.line_number, l.type,
       l.provider_reference, l.merchant_reference, l.amount_paisa, l.fee_paisa, l.tax_paisa,
       l.outcome, l.payment_id, l.refund_id
FROM settlement_lines l JOIN settlement_files f USING (settlement_file_id)
WHERE l.settlement_file_id = $1
ORDER BY l.line_number
"""

_UNSETTLED_ROWS = """
SELECT * FROM (
    SELECT b.payment_id, NULL::text AS refund_id, 'payment' AS type, b.provider_reference,
           b.payment_id AS merchant_reference, b.captured_paisa AS amount_paisa,
           b.fees_paisa AS fee_paisa, b.tax_paisa, b.missing_run_id
    FROM book_payments b
    WHERE b.provider = $1 AND b.settlement_date = $2 AND b.captured_paisa > 0
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.payment_id)
    UNION ALL
    SELECT b.payment_id, b.refund_id, 'refund', b.provider_reference, b.refund_id,
           b.amount_paisa, 0, 0, b.missing_run_id
    FROM book_refunds b
    WHERE b.provider = $1 AND b.settlement_date = $2
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.refund_id)
) unsettled ORDER BY merchant_reference
"""


async def report_rows(
    conn: asyncpg.Connection, file_id: str | None, provider: str, day: date
) -> AsyncIterator[asyncpg.Record]:
    """The file's lines, then the day's items no line settled (inside a transaction)."""
    if file_id is not None:
        async for row in conn.cursor(_REPORT_ROWS, file_id, prefetch=2000):
            yield row
    async for row in conn.cursor(_UNSETTLED_ROWS, provider, day, prefetch=2000):
        yield row
