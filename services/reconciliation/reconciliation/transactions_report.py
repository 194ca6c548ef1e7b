"""The transactions report: one CSV row per payment and per refund created in a range, from
the fact tables (analytics_facts), oldest first, streamed in chunks straight from a database
cursor (memory does not grow with the report). Amounts in paisa and in rupees, times in IST;
never a card number (the facts hold none: only the card's brand)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from gateway_core.money import rupees_string
from reconciliation.analytics import TimeRange
from reconciliation.matching import IST

CSV_HEADER = (
    "type",
    "payment_id",
    "refund_id",
    "merchant_id",
    "created_at",
    "completed_at",
    "status",
    "payment_method",
    "provider",
    "provider_reference",
    "card_brand",
    "currency",
    "amount_paisa",
    "amount",
    "fees_paisa",
    "fees",
    "tax_paisa",
    "tax",
    "failure_reason",
)
CSV_CHUNK_BYTES = 64 * 1024
CURSOR_PREFETCH = 2000

# Payments and refunds in one time order; each side reads its (merchant_id,) created_at index,
# and PostgreSQL merges the two ordered scans.
_ROWS = """
SELECT * FROM (
    SELECT 'payment' AS type, p.payment_id, '' AS refund_id, p.merchant_id, p.created_at,
           p.succeeded_at AS completed_at, p.status, p.payment_method, p.provider,
           p.provider_reference, p.card_brand, p.currency, p.amount_paisa, p.fees_paisa,
           p.tax_paisa, p.failure_reason
    FROM analytics_payments p
    WHERE p.created_at >= $1 AND p.created_at < $2 {payment_merchant}
    UNION ALL
    SELECT lower(r.kind), r.payment_id, r.refund_id, r.merchant_id, r.created_at,
           r.processed_at, r.status, p.payment_method, p.provider, r.provider_reference,
           p.card_brand, r.currency, r.amount_paisa, 0, 0, r.failure_reason
    FROM analytics_refunds r JOIN analytics_payments p USING (payment_id)
    WHERE r.created_at >= $1 AND r.created_at < $2 {refund_merchant}
) AS transactions
ORDER BY created_at, payment_id, refund_id
"""


def _ist(moment: datetime | None) -> str:
    return moment.astimezone(IST).isoformat(timespec="seconds") if moment else ""


async def csv_chunks(
    conn: asyncpg.Connection, time_range: TimeRange, merchant_id: str | None
) -> AsyncIterator[bytes]:
    """The report's CSV in chunks of about CSV_CHUNK_BYTES (call inside a transaction: the
    rows come from a cursor). `merchant_id` None: every merchant's."""
    args: list[object] = [time_range.start, time_range.end]
    payment_merchant = refund_merchant = ""
    if merchant_id is not None:
        args.append(merchant_id)
        payment_merchant = "AND p.merchant_id = $3"
        refund_merchant = "AND r.merchant_id = $3"
    sql = _ROWS.format(payment_merchant=payment_merchant, refund_merchant=refund_merchant)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    async for row in conn.cursor(sql, *args, prefetch=CURSOR_PREFETCH):
        writer.writerow(
            (
                row["type"],
                row["payment_id"],
                row["refund_id"],
                row["merchant_id"],
                _ist(row["created_at"]),
                _ist(row["completed_at"]),
                row["status"],
                row["payment_method"],
                row["provider"],
                row["provider_reference"],
                row["card_brand"],
                row["currency"],
                row["amount_paisa"],
                rupees_string(row["amount_paisa"]),
                row["fees_paisa"],
                rupees_string(row["fees_paisa"]),
                row["tax_paisa"],
                rupees_string(row["tax_paisa"]),
                row["failure_reason"],
            )
        )
        if buffer.tell() >= CSV_CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
