"""Ingesting one settlement file: stage, validate, match and store it in one transaction.

The file is streamed from a seekable binary stream (a spooled temporary file for fetched
files) into PostgreSQL with COPY, block by block, so memory does not grow with the file, and
screened for plainly well-formed lines on the way; the database then judges the other lines
(reconciliation.settlement_file), classifies and stores every line in one statement
(reconciliation.matching.CLASSIFY) and raises the exceptions with set-based statements. A
malformed file raises MalformedFile and the transaction rolls back: nothing of it is stored.
The provider's advisory lock serialises runs of one provider (the items they settle), and a
file already ingested for that provider and day (same SHA-256) answers its first run and
changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import IO, Any

import asyncpg

from gateway_core.config import Settings
from gateway_core.ids import new_id
from reconciliation.matching import CLASSIFY, Outcome, overdue_on, settlement_deadline
from reconciliation.settlement_file import (
    HEADER,
    STAGING,
    VIOLATION,
    VIOLATION_AMONG,
    LineScreen,
    MalformedFile,
    check_header,
    copy_error,
    split_header,
    staged,
    staging_table,
)

BLOCK_BYTES = 1 << 20
# The statements over a whole file run longer than DB_COMMAND_TIMEOUT allows a request's:
# a million lines take seconds, a hundred million minutes. Ingest uses a pool of its own.
BULK_COMMAND_TIMEOUT_SECONDS = 3600.0
BULK_CONNECTIONS = 2
WORK_MEM = "256MB"

# Called with the number of lines read so far (the header excluded).
Progress = Callable[[int], None]


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


def bulk_settings(settings: Settings) -> Settings:
    """The settings of the pool `ingest_file` runs on: few connections, long statements."""
    return settings.model_copy(
        update={
            "db_command_timeout": BULK_COMMAND_TIMEOUT_SECONDS,
            "db_max_open_conns": BULK_CONNECTIONS,
            "db_max_idle_conns": 0,
        }
    )


def checksum(stream: IO[bytes]) -> str:
    """Hex SHA-256 of the stream's content, read in blocks; the stream is rewound."""
    digest = hashlib.sha256()
    stream.seek(0)
    while block := stream.read(BLOCK_BYTES):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


async def _data_blocks(
    stream: IO[bytes], progress: Progress | None, screen: LineScreen
) -> AsyncIterator[bytes]:
    """The file after its header line (checked first), in blocks, counting lines read and
    screening each block while the database reads it (in a thread: the event loop serves
    requests meanwhile)."""
    first = stream.read(BLOCK_BYTES)
    head, rest = split_header(first)
    while not rest and len(first) == BLOCK_BYTES and b"\n" not in head:
        more = stream.read(BLOCK_BYTES)
        if not more:
            break
        head, rest = split_header(head + more)
    check_header(head)
    lines = 0
    block = rest
    while block:
        lines += block.count(b"\n")
        yield block
        if progress is not None:
            progress(lines)
        await asyncio.to_thread(screen.feed, block)
        block = stream.read(BLOCK_BYTES)
    screen.finish()


_FIRST_LINE = "SELECT settlement_id, utr FROM incoming_lines ORDER BY line_number LIMIT 1"

_FIND_RUN = """
SELECT r.run_id FROM settlement_files f JOIN reconciliation_runs r USING (settlement_file_id)
WHERE f.provider = $1 AND f.settlement_date = $2 AND f.checksum_sha256 = $3
"""

# A later file settled items that had become MISSING_IN_FILE: their exceptions close.
_RESOLVE_SETTLED_MISSING = """
UPDATE reconciliation_exceptions e
SET status = 'RESOLVED', resolved_by = 'reconciliation', resolved_at = now(),
    resolution_note = 'settled by run ' || $2 || ' (settlement ' || $3 || ', UTR ' || $4
                      || ', line ' || s.line_number || ')'
FROM settled_items s
WHERE s.settlement_file_id = $1 AND e.type = 'MISSING_IN_FILE' AND e.status = 'OPEN'
  AND coalesce(e.refund_id, e.payment_id) = s.item_id
"""

# One exception per discrepant line, its id the run's ULID and the line number (unique, and in
# creation order like every other id).
_LINE_EXCEPTIONS = """
INSERT INTO reconciliation_exceptions (exception_id, type, provider, settlement_date, run_id,
    settlement_file_id, line_number, payment_id, refund_id, provider_reference, expected,
    actual, amount_paisa)
SELECT 'EXC_' || substr($2, 5) || lpad(line_number::text, 10, '0'), outcome, $3, $4, $2,
       settlement_file_id, line_number, payment_id, refund_id, provider_reference,
       coalesce(expected, ''), coalesce(actual, ''), amount_paisa
FROM settlement_lines WHERE settlement_file_id = $1 AND outcome <> 'MATCHED' AND NOT restated
"""

# Items whose deadline is this file: captured (refunded) on or before `cutoff`, never settled,
# not yet declared missing.
_OVERDUE = """
WITH payments AS (
    UPDATE book_payments b SET missing_run_id = $3
    WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
      AND b.captured_paisa > 0
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.payment_id)
    RETURNING b.payment_id, NULL::text AS refund_id, b.provider_reference,
              b.captured_paisa AS amount, b.settlement_date
), refunds AS (
    UPDATE book_refunds b SET missing_run_id = $3
    WHERE b.provider = $1 AND b.settlement_date <= $2 AND b.missing_run_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM settled_items s WHERE s.item_id = b.refund_id)
    RETURNING b.payment_id, b.refund_id, b.provider_reference, b.amount_paisa AS amount,
              b.settlement_date
)
SELECT * FROM payments UNION ALL SELECT * FROM refunds
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


async def ingest_file(
    pool: asyncpg.Pool,
    stream: IO[bytes],
    origin: FileOrigin,
    *,
    sla_days: int,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest and match the file in `stream` (seekable) once; MalformedFile leaves nothing.
    `pool`: one made with `bulk_settings`, so that statements over large files may finish."""
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
        # Matching sorts and hashes the whole file: let it do so in memory.
        await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        table = staging_table(file_id)
        await _stage(conn, table, stream, progress)
        await conn.execute(
            "INSERT INTO settlement_files (settlement_file_id, provider, settlement_date,"
            " checksum_sha256) VALUES ($1, $2, $3, $4)",
            file_id,
            origin.provider,
            origin.settlement_date,
            digest,
        )
        first = await conn.fetchrow(staged(_FIRST_LINE, table))
        settlement_id, utr = (first["settlement_id"], first["utr"]) if first else ("", "")
        figures = await conn.fetchrow(
            staged(CLASSIFY, table), origin.provider, file_id, settlement_id
        )
        await conn.execute(f"DROP TABLE {table}")
        await _record_run(
            conn,
            origin,
            file_id,
            run_id,
            sla_days,
            SettledFile(settlement_id, utr, figures),
        )
    return IngestResult(run_id=run_id, already_ingested=False)


async def _stage(
    conn: asyncpg.Connection, table: str, stream: IO[bytes], progress: Progress | None
) -> None:
    """COPY the file into the run's staging table and refuse it at its first bad line."""
    await conn.execute(staged(STAGING, table))
    screen = LineScreen()
    try:
        # A savepoint: a COPY that fails must not abort the caller's transaction before the
        # error is translated (the transaction is rolled back by the caller anyway).
        async with conn.transaction():
            await conn.copy_to_table(
                table,
                source=_data_blocks(stream, progress, screen),
                columns=list(HEADER),
                format="csv",
            )
    except (asyncpg.DataError, asyncpg.BadCopyFileFormatError) as exc:
        raise copy_error(exc) from None
    # The lines the screen cleared are well formed; the database judges the rest.
    if screen.everything:
        violation = await conn.fetchrow(staged(VIOLATION, table))
    else:
        violation = await conn.fetchrow(staged(VIOLATION_AMONG, table), screen.suspects)
    if violation is not None:
        raise MalformedFile(violation["line_number"], violation["problem"])


@dataclass(frozen=True)
class SettledFile:
    """What CLASSIFY found in a file: its settlement, totals and lines per outcome."""

    settlement_id: str
    utr: str
    # Its totals and lines per outcome (CLASSIFY's answer).
    figures: asyncpg.Record


async def _record_run(
    conn: asyncpg.Connection,
    origin: FileOrigin,
    file_id: str,
    run_id: str,
    sla_days: int,
    settled: SettledFile,
) -> None:
    """Exceptions for the file's discrepancies and the items now overdue; the run's row."""
    totals = settled.figures
    outcomes: dict[str, dict[str, int]] = dict(totals["outcomes"])
    await conn.execute(
        _RESOLVE_SETTLED_MISSING, file_id, run_id, settled.settlement_id, settled.utr
    )
    status = await conn.execute(
        _LINE_EXCEPTIONS, file_id, run_id, origin.provider, origin.settlement_date
    )
    exceptions = int(status.split()[-1])
    cutoff = overdue_on(origin.settlement_date, sla_days)
    overdue = await conn.fetch(_OVERDUE, origin.provider, cutoff, run_id)
    missing = [
        (
            new_id("EXC"),
            Outcome.MISSING_IN_FILE.value,
            origin.provider,
            item["settlement_date"],
            run_id,
            None,
            None,
            item["payment_id"],
            item["refund_id"],
            item["provider_reference"],
            f"settled by the file of {settlement_deadline(item['settlement_date'], sla_days)}",
            "",
            item["amount"],
        )
        for item in overdue
    ]
    exceptions += await _write_exceptions(conn, missing)
    if overdue:
        outcomes[Outcome.MISSING_IN_FILE.value] = {
            "count": len(overdue),
            "amount_paisa": sum(int(item["amount"]) for item in overdue),
        }
    expected = await conn.fetchrow(_EXPECTED, origin.provider, origin.settlement_date)
    if expected["n"]:
        outcomes[Outcome.EXPECTED.value] = {
            "count": expected["n"],
            "amount_paisa": int(expected["amount"]),
        }
    net = (
        totals["payments"]
        - totals["refunds"]
        - totals["chargebacks"]
        + totals["adjustments"]
        - totals["fees"]
        - totals["tax"]
    )
    await conn.execute(
        "UPDATE settlement_files SET line_count = $2, settlement_id = $3, utr = $4"
        " WHERE settlement_file_id = $1",
        file_id,
        totals["line_count"],
        settled.settlement_id,
        settled.utr,
    )
    await conn.execute(
        """
        INSERT INTO reconciliation_runs (run_id, settlement_file_id, provider, settlement_date,
            source, started_by, line_count, payments_paisa, refunds_paisa, chargebacks_paisa,
            adjustments_paisa, fees_paisa, tax_paisa, net_paisa, outcomes, exception_count)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        """,
        run_id,
        file_id,
        origin.provider,
        origin.settlement_date,
        origin.source,
        origin.started_by,
        totals["line_count"],
        totals["payments"],
        totals["refunds"],
        totals["chargebacks"],
        totals["adjustments"],
        totals["fees"],
        totals["tax"],
        net,
        outcomes,
        exceptions,
    )


async def _write_exceptions(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
    if rows:
        await conn.copy_records_to_table(
            "reconciliation_exceptions", records=rows, columns=_EXCEPTION_COLUMNS
        )
    return len(rows)
