"""The settlement report: per provider and day, the file's totals against our books.

JSON is the SettlementReport message; CSV (`Accept: text/csv`) has one row per settlement line
of the day's latest file and one per item of ours that no line has settled yet (EXPECTED or
MISSING_IN_FILE), streamed in chunks straight from a database cursor.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date

import asyncpg

from gateway_core.money import rupees_string
from paygate.reconciliation.v1 import reconciliation_pb2 as pb
from reconciliation import repository
from reconciliation.matching import Outcome

CSV_HEADER = (
    "provider",
    "settlement_date",
    "settlement_id",
    "utr",
    "line_number",
    "type",
    "provider_reference",
    "merchant_reference",
    "amount",
    "fee",
    "tax",
    "outcome",
    "payment_id",
    "refund_id",
)
CSV_CHUNK_BYTES = 64 * 1024


def outcome_counts(outcomes: Mapping[Outcome, tuple[int, int]]) -> list[pb.OutcomeCount]:
    """In the enum's order, only the outcomes present."""
    return [
        pb.OutcomeCount(outcome=o.value, count=outcomes[o][0], amount_paisa=outcomes[o][1])
        for o in Outcome
        if o in outcomes
    ]


async def build(
    conn: asyncpg.Connection, day: date, providers: Sequence[str]
) -> pb.SettlementReport:
    report = pb.SettlementReport(date=day.isoformat(), currency="INR")
    for provider in providers:
        figures = await repository.day_figures(conn, provider, day)
        entry = pb.ProviderSettlement(
            provider=provider,
            method=figures.method,
            date=day.isoformat(),
            expected_gross_paisa=figures.expected_gross_paisa,
            expected_refunds_paisa=figures.expected_refunds_paisa,
            expected_fees_paisa=figures.expected_fees_paisa,
            expected_tax_paisa=figures.expected_tax_paisa,
            expected_chargebacks_paisa=figures.expected_chargebacks_paisa,
            expected_net_paisa=figures.expected_gross_paisa
            - figures.expected_refunds_paisa
            - figures.expected_chargebacks_paisa
            - figures.expected_fees_paisa
            - figures.expected_tax_paisa,
            outcomes=outcome_counts({Outcome(k): v for k, v in figures.outcomes.items()}),
        )
        run = figures.run
        if run is not None:
            entry.settlement_id = run["settlement_id"]
            entry.utr = run["utr"]
            entry.run_id = run["run_id"]
            entry.checksum_sha256 = run["checksum_sha256"]
            entry.gross_paisa = run["payments_paisa"]
            entry.refunds_paisa = run["refunds_paisa"]
            entry.chargebacks_paisa = run["chargebacks_paisa"]
            entry.adjustments_paisa = run["adjustments_paisa"]
            entry.fees_paisa = run["fees_paisa"]
            entry.tax_paisa = run["tax_paisa"]
            entry.net_settled_paisa = run["net_paisa"]
            entry.line_count = run["line_count"]
            if (
                report.ingested_at.seconds == 0
                or run["created_at"].timestamp() > report.ingested_at.seconds
            ):
                report.ingested_at.FromDatetime(run["created_at"])
        entry.difference_paisa = entry.net_settled_paisa - entry.expected_net_paisa
        report.providers.append(entry)
        report.gross_paisa += entry.gross_paisa
        report.fees_paisa += entry.fees_paisa
        report.tax_paisa += entry.tax_paisa
        report.refunds_paisa += entry.refunds_paisa
        report.chargebacks_paisa += entry.chargebacks_paisa
        report.adjustments_paisa += entry.adjustments_paisa
        report.net_paisa += entry.net_settled_paisa
        report.expected_net_paisa += entry.expected_net_paisa
        report.difference_paisa += entry.difference_paisa
        report.line_count += entry.line_count
        matched = figures.outcomes.get(Outcome.MATCHED.value, (0, 0))[0]
        report.matched_count += matched
        report.discrepancy_count += sum(
            count for name, (count, _) in figures.outcomes.items() if Outcome(name).raises_exception
        )
    report.provider = ",".join(providers)
    return report


async def csv_chunks(
    conn: asyncpg.Connection, day: date, providers: Sequence[str]
) -> AsyncIterator[bytes]:
    """The report's CSV in chunks of about CSV_CHUNK_BYTES (inside a transaction: cursors)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for provider in providers:
        run = await conn.fetchrow(
            "SELECT r.settlement_file_id, f.settlement_id, f.utr FROM reconciliation_runs r"
            " JOIN settlement_files f USING (settlement_file_id)"
            " WHERE r.provider = $1 AND r.settlement_date = $2 ORDER BY r.run_id DESC LIMIT 1",
            provider,
            day,
        )
        file_id = run["settlement_file_id"] if run else None
        async for row in repository.report_rows(conn, file_id, provider, day):
            line_number = row.get("line_number")
            if line_number is None:
                outcome = "EXPECTED" if row["missing_run_id"] is None else "MISSING_IN_FILE"
                settlement = ("", "", "")
            else:
                outcome = row["outcome"]
                settlement = (row["settlement_id"], row["utr"], str(line_number))
            writer.writerow(
                (
                    provider,
                    day.isoformat(),
                    *settlement,
                    row["type"],
                    row["provider_reference"],
                    row["merchant_reference"],
                    rupees_string(row["amount_paisa"]),
                    rupees_string(row["fee_paisa"]),
                    rupees_string(row["tax_paisa"]),
                    outcome,
                    row["payment_id"] or "",
                    row["refund_id"] or "",
                )
            )
            if buffer.tell() >= CSV_CHUNK_BYTES:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
