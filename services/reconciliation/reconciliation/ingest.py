"""Ingesting one settlement file: parse, match and store it in one transaction, streamed.

The file is read from a seekable binary stream (a spooled temporary file for fetched files) in
chunks of lines: each chunk's lines are validated, looked up in our books with one query per
line type, classified (reconciliation.matching), then written with PostgreSQL COPY, so memory
does not grow with the file. The whole file is one transaction: a malformed line anywhere
rolls everything back and nothing of the file is stored. The provider's advisory lock
serialises runs of one provider (the items they settle), and a file already ingested for that
provider and day (same SHA-256) answers its first run and changes nothing.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from typing import IO, Any

import asyncpg

from gateway_core.ids import new_id
from reconciliation.matching import (
    BookPayment,
    BookRefund,
    Books,
    Outcome,
    Verdict,
    classify,
    overdue_on,
    settlement_deadline,
)
from reconciliation.settlement_file import SettlementLine, parse

CHUNK_LINES = 10_000
_HASH_BLOCK = 1 << 20

Progress = Callable[[int], None]


@dataclass
class Totals:
    line_count: int = 0
    payments_paisa: int = 0
    refunds_paisa: int = 0
    chargebacks_paisa: int = 0
    adjustments_paisa: int = 0
    fees_paisa: int = 0
    tax_paisa: int = 0
    settlement_id: str = ""
    utr: str = ""
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    exception_count: int = 0

    @property
    def net_paisa(self) -> int:
        return (
            self.payments_paisa
            - self.refunds_paisa
            - self.chargebacks_paisa
            + self.adjustments_paisa
            - self.fees_paisa
            - self.tax_paisa
        )

    def add_line(self, line: SettlementLine) -> None:
        self.line_count += 1
        if line.type == "payment":
            self.payments_paisa += line.amount_paisa
        elif line.type == "refund":
            self.refunds_paisa += line.amount_paisa
        elif line.type == "chargeback":
            self.chargebacks_paisa += line.amount_paisa
        else:
            self.adjustments_paisa += line.amount_paisa
        self.fees_paisa += line.fee_paisa
        self.tax_paisa += line.tax_paisa
        self.settlement_id, self.utr = line.settlement_id, line.utr

    def count(self, outcome: Outcome, amount_paisa: int, times: int = 1) -> None:
        entry = self.outcomes.setdefault(outcome.value, {"count": 0, "amount_paisa": 0})
        entry["count"] += times
        entry["amount_paisa"] += amount_paisa


@dataclass(frozen=True)
class FileOrigin:
    """Where a file came from and who asked for it."""

    provider: str
    settlement_date: date
    source: str  # FETCHED, UPLOADED, SCHEDULED, COMMAND_LINE
    started_by: str


@dataclass(frozen=True)
class IngestResult:
    run_id: str
    already_ingested: bool


def checksum(stream: IO[bytes]) -> str:
    """Hex SHA-256 of the stream's content, read in blocks; the stream is rewound."""
    digest = hashlib.sha256()
    stream.seek(0)
    while block := stream.read(_HASH_BLOCK):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def _chunks(lines: Iterator[SettlementLine], size: int) -> Iterator[list[SettlementLine]]:
    while chunk := list(islice(lines, size)):
        yield chunk


_FIND_RUN = """
SELECT r.run_id FROM settlement_files f JOIN reconciliation_runs r USING (settlement_file_id)
WHERE f.provider = $1 AND f.settlement_date = $2 AND f.checksum_sha256 = $3
"""

_PAYMENTS_BY_REFERENCE = """
SELECT b.payment_id, b.provider_reference, b.status, b.captured_paisa, b.fees_paisa,
       b.tax_paisa, s.item_id IS NOT NULL AS settled
FROM book_payments b LEFT JOIN settled_items s ON s.item_id = b.payment_id
WHERE b.provider = $1 AND b.provider_reference = ANY($2::text[])
"""
_PAYMENTS_BY_ID = """
SELECT b.payment_id, b.provider_reference, b.status, b.captured_paisa, b.fees_paisa,
       b.tax_paisa, s.item_id IS NOT NULL AS settled
FROM book_payments b LEFT JOIN settled_items s ON s.item_id = b.payment_id
WHERE b.provider = $1 AND b.payment_id = ANY($2::text[])
"""
_REFUNDS_BY_REFERENCE = """
SELECT b.refund_id, b.payment_id, b.provider_reference, b.status, b.amount_paisa,
       s.item_id IS NOT NULL AS settled
FROM book_refunds b LEFT JOIN settled_items s ON s.item_id = b.refund_id
WHERE b.provider = $1 AND b.provider_reference = ANY($2::text[])
"""
_REFUNDS_BY_ID = """
SELECT b.refund_id, b.payment_id, b.provider_reference, b.status, b.amount_paisa,
       s.item_id IS NOT NULL AS settled
FROM book_refunds b LEFT JOIN settled_items s ON s.item_id = b.refund_id
WHERE b.provider = $1 AND b.refund_id = ANY($2::text[])
"""

# A later file settled items that had become MISSING_IN_FILE: their exceptions close.
_RESOLVE_SETTLED_MISSING = """
UPDATE reconciliation_exceptions
SET status = 'RESOLVED', resolved_by = 'reconciliation', resolved_at = now(),
    resolution_note = 'settled by run ' || $2 || ' (settlement ' || $3 || ', UTR ' || $4 || ')'
WHERE type = 'MISSING_IN_FILE' AND status = 'OPEN' AND coalesce(refund_id, payment_id) = ANY($1)
"""

# Items whose deadline is this file: captured (refunded) on or before `cutoff`, never settled,
# not yet declared missing. Locked, so a concurrent event cannot race the flag.
_OVERDUE_PAYMENTS = """
UPDATE book_payments b SET missing_run_id = $3
WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
  AND b.captured_paisa > 0
  AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.payment_id)
RETURNING b.payment_id, NULL::text AS refund_id, b.provider_reference, b.captured_paisa AS amount,
          b.settlement_date
"""
_OVERDUE_REFUNDS = """
UPDATE book_refunds b SET missing_run_id = $3
WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.refund_id)
RETURNING b.payment_id, b.refund_id, b.provider_reference, b.amount_paisa AS amount,
          b.settlement_date
"""
# What is still EXPECTED from this provider up to this file's day.
_EXPECTED = """
SELECT count(*) AS n, coalesce(sum(amount), 0) AS amount FROM (
    SELECT b.captured_paisa AS amount FROM book_payments b
    WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
      AND b.captured_paisa > 0
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.payment_id)
    UNION ALL
    SELECT b.amount_paisa FROM book_refunds b
    WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.refund_id)
) due
"""

_LINE_COLUMNS = (
    "settlement_file_id",
    "line_number",
    "type",
    "provider_reference",
    "merchant_reference",
    "amount_paisa",
    "fee_paisa",
    "tax_paisa",
    "settled_at",
    "method",
    "outcome",
    "payment_id",
    "refund_id",
)
_EXCEPTION_COLUMNS = (
    "exception_id",
    "type",
    "provider",
    "settlement_date",
    "run_id",
    "settlement_file_id",
    "line_number",
    "payment_id",
    "refund_id",
    "provider_reference",
    "expected",
    "actual",
    "amount_paisa",
)


class FileIngest:
    """One file's ingest inside an open transaction (see `ingest_file`)."""

    def __init__(
        self, conn: asyncpg.Connection, origin: FileOrigin, file_id: str, run_id: str
    ) -> None:
        self._conn = conn
        self._origin = origin
        self._file_id = file_id
        self._run_id = run_id
        self.totals = Totals()

    async def add_chunk(self, lines: Sequence[SettlementLine]) -> None:
        books = await self._books(lines)
        taken: set[str] = set()
        verdicts = [classify(line, books, taken) for line in lines]
        rows: list[tuple[Any, ...]] = []
        exceptions: list[tuple[Any, ...]] = []
        settled: list[tuple[str, str, int]] = []
        for line, verdict in zip(lines, verdicts, strict=True):
            self.totals.add_line(line)
            self.totals.count(verdict.outcome, line.amount_paisa)
            rows.append(self._line_row(line, verdict))
            if item := verdict.settles:
                settled.append((item, self._file_id, line.line_number))
            if verdict.outcome.raises_exception:
                exceptions.append(self._line_exception(line, verdict))
        await self._conn.copy_records_to_table(
            "settlement_lines", records=rows, columns=_LINE_COLUMNS
        )
        if settled:
            await self._conn.copy_records_to_table(
                "settled_items",
                records=settled,
                columns=("item_id", "settlement_file_id", "line_number"),
            )
            await self._conn.execute(
                _RESOLVE_SETTLED_MISSING,
                [item for item, _, _ in settled],
                self._run_id,
                self.totals.settlement_id,
                self.totals.utr,
            )
        if exceptions:
            await self._write_exceptions(exceptions)

    async def finish(self, sla_days: int) -> None:
        """Declare overdue items MISSING_IN_FILE, count what is still EXPECTED, store the run."""
        origin = self._origin
        cutoff = overdue_on(origin.settlement_date, sla_days)
        overdue = [
            *await self._conn.fetch(_OVERDUE_PAYMENTS, origin.provider, cutoff, self._run_id),
            *await self._conn.fetch(_OVERDUE_REFUNDS, origin.provider, cutoff, self._run_id),
        ]
        for item in overdue:
            self.totals.count(Outcome.MISSING_IN_FILE, item["amount"])
        if overdue:
            await self._write_exceptions(
                [
                    (
                        new_id("EXC"),
                        Outcome.MISSING_IN_FILE.value,
                        origin.provider,
                        item["settlement_date"],
                        self._run_id,
                        None,
                        None,
                        item["payment_id"],
                        item["refund_id"],
                        item["provider_reference"],
                        "settled by the file of "
                        f"{settlement_deadline(item['settlement_date'], sla_days)}",
                        "",
                        item["amount"],
                    )
                    for item in overdue
                ]
            )
        expected = await self._conn.fetchrow(_EXPECTED, origin.provider, origin.settlement_date)
        if expected["n"]:
            self.totals.count(Outcome.EXPECTED, int(expected["amount"]), times=expected["n"])
        totals = self.totals
        await self._conn.execute(
            "UPDATE settlement_files SET line_count = $2, settlement_id = $3, utr = $4"
            " WHERE settlement_file_id = $1",
            self._file_id,
            totals.line_count,
            totals.settlement_id,
            totals.utr,
        )
        await self._conn.execute(
            """
            INSERT INTO reconciliation_runs (run_id, settlement_file_id, provider,
                settlement_date, source, started_by, line_count, payments_paisa, refunds_paisa,
                chargebacks_paisa, adjustments_paisa, fees_paisa, tax_paisa, net_paisa,
                outcomes, exception_count)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
            """,
            self._run_id,
            self._file_id,
            origin.provider,
            origin.settlement_date,
            origin.source,
            origin.started_by,
            totals.line_count,
            totals.payments_paisa,
            totals.refunds_paisa,
            totals.chargebacks_paisa,
            totals.adjustments_paisa,
            totals.fees_paisa,
            totals.tax_paisa,
            totals.net_paisa,
            totals.outcomes,
            totals.exception_count,
        )

    async def _books(self, lines: Sequence[SettlementLine]) -> Books:
        provider = self._origin.provider
        payment_lines = [line for line in lines if line.type != "refund"]
        refund_lines = [line for line in lines if line.type == "refund"]
        payments_by_reference: dict[str, BookPayment] = {}
        payments_by_id: dict[str, BookPayment] = {}
        refunds_by_reference: dict[str, BookRefund] = {}
        refunds_by_id: dict[str, BookRefund] = {}
        if payment_lines:
            for row in await self._conn.fetch(
                _PAYMENTS_BY_REFERENCE,
                provider,
                [line.provider_reference for line in payment_lines],
            ):
                payments_by_reference[row["provider_reference"]] = _payment(row)
            unresolved = [
                line.merchant_reference
                for line in payment_lines
                if line.provider_reference not in payments_by_reference or line.type != "payment"
            ]
            if unresolved:
                for row in await self._conn.fetch(_PAYMENTS_BY_ID, provider, unresolved):
                    payments_by_id[row["payment_id"]] = _payment(row)
        if refund_lines:
            for row in await self._conn.fetch(
                _REFUNDS_BY_REFERENCE, provider, [line.provider_reference for line in refund_lines]
            ):
                refunds_by_reference[row["provider_reference"]] = _refund(row)
            unresolved = [
                line.merchant_reference
                for line in refund_lines
                if line.provider_reference not in refunds_by_reference
            ]
            if unresolved:
                for row in await self._conn.fetch(_REFUNDS_BY_ID, provider, unresolved):
                    refunds_by_id[row["refund_id"]] = _refund(row)
        return Books(payments_by_reference, payments_by_id, refunds_by_reference, refunds_by_id)

    def _line_row(self, line: SettlementLine, verdict: Verdict) -> tuple[Any, ...]:
        return (
            self._file_id,
            line.line_number,
            line.type,
            line.provider_reference,
            line.merchant_reference,
            line.amount_paisa,
            line.fee_paisa,
            line.tax_paisa,
            line.settled_at,
            line.method,
            verdict.outcome.value,
            verdict.payment_id,
            verdict.refund_id,
        )

    def _line_exception(self, line: SettlementLine, verdict: Verdict) -> tuple[Any, ...]:
        return (
            new_id("EXC"),
            verdict.outcome.value,
            self._origin.provider,
            self._origin.settlement_date,
            self._run_id,
            self._file_id,
            line.line_number,
            verdict.payment_id,
            verdict.refund_id,
            line.provider_reference,
            verdict.expected,
            verdict.actual,
            line.amount_paisa,
        )

    async def _write_exceptions(self, rows: list[tuple[Any, ...]]) -> None:
        self.totals.exception_count += len(rows)
        await self._conn.copy_records_to_table(
            "reconciliation_exceptions", records=rows, columns=_EXCEPTION_COLUMNS
        )


def _payment(row: asyncpg.Record) -> BookPayment:
    return BookPayment(
        payment_id=row["payment_id"],
        provider_reference=row["provider_reference"],
        status=row["status"],
        captured_paisa=row["captured_paisa"],
        fees_paisa=row["fees_paisa"],
        tax_paisa=row["tax_paisa"],
        settled=row["settled"],
    )


def _refund(row: asyncpg.Record) -> BookRefund:
    return BookRefund(
        refund_id=row["refund_id"],
        payment_id=row["payment_id"],
        provider_reference=row["provider_reference"],
        status=row["status"],
        amount_paisa=row["amount_paisa"],
        settled=row["settled"],
    )


async def ingest_file(
    pool: asyncpg.Pool,
    stream: IO[bytes],
    origin: FileOrigin,
    *,
    sla_days: int,
    progress: Progress | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> IngestResult:
    """Ingest and match the file in `stream` (seekable) once; MalformedFile leaves nothing."""
    digest = checksum(stream)
    async with pool.acquire() as conn, conn.transaction():
        # One run at a time per provider: the items a file settles are that provider's.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('reconciliation:' || $1, 0))",
            origin.provider,
        )
        existing = await conn.fetchval(_FIND_RUN, origin.provider, origin.settlement_date, digest)
        if existing is not None:
            return IngestResult(run_id=existing, already_ingested=True)
        file_id, run_id = new_id("SFL"), new_id("RUN")
        await conn.execute(
            "INSERT INTO settlement_files (settlement_file_id, provider, settlement_date,"
            " checksum_sha256) VALUES ($1, $2, $3, $4)",
            file_id,
            origin.provider,
            origin.settlement_date,
            digest,
        )
        work = FileIngest(conn, origin, file_id, run_id)
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        try:
            for chunk in _chunks(parse(text), chunk_lines):
                await work.add_chunk(chunk)
                if progress is not None:
                    progress(len(chunk))
            await work.finish(sla_days)
        finally:
            text.detach()
    return IngestResult(run_id=run_id, already_ingested=False)


def outcome_totals(outcomes: dict[str, dict[str, int]]) -> dict[Outcome, tuple[int, int]]:
    """The run's stored outcome counts as {Outcome: (count, amount_paisa)}."""
    found: dict[Outcome, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for name, entry in outcomes.items():
        found[Outcome(name)] = (int(entry["count"]), int(entry["amount_paisa"]))
    return dict(found)
