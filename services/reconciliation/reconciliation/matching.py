"""Matching: which of our payments or refunds a settlement line settles, and how it agrees.

Every line ends in exactly one outcome (`Outcome`), decided in this order:

1. adjustment lines have no counterpart in our books: MISSING_INTERNALLY, for a person to look
   at;
2. a payment (refund) line is matched to our payment (refund) of the file's provider by the
   provider's reference, or by our id in `merchant_reference` when the reference is unknown;
   a chargeback line to our dispute by the provider's case reference; found nowhere:
   MISSING_INTERNALLY;
3. the item was settled already, by an earlier line of this file or by another settlement
   (an earlier file with another settlement_id): DUPLICATE (the first line keeps its own
   outcome). A file that restates the same settlement (the provider's file for a day fetched
   again after it grew: same settlement_id, new content) is judged line by line again, but
   raises no second exception for what the first file already raised;
4. settled although we never captured the payment (it failed, expired, was cancelled) or never
   processed the refund: STATUS_MISMATCH;
5. a different amount than we captured (refunded): AMOUNT_MISMATCH;
6. a different fee or tax than our ledger computed (refunds: any fee at all): FEE_MISMATCH;
7. otherwise MATCHED.

Lines 2 to 7 settle their item (a later line for it is a DUPLICATE). Our own items that no line
settled are EXPECTED until their deadline, the provider's file of their day plus
RECON_SETTLEMENT_SLA_DAYS, and MISSING_IN_FILE once that file was reconciled without them; a
later file that settles them makes them MATCHED after all.

The rules run as one set-based statement (`CLASSIFY`) over the staged file, because files have
millions of lines and PostgreSQL matches them an order of magnitude faster than a Python loop
could fetch and compare them; tests/unit/test_recon_ingest.py checks each rule.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")


class Outcome(StrEnum):
    MATCHED = "MATCHED"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    FEE_MISMATCH = "FEE_MISMATCH"
    STATUS_MISMATCH = "STATUS_MISMATCH"
    DUPLICATE = "DUPLICATE"
    MISSING_INTERNALLY = "MISSING_INTERNALLY"
    MISSING_IN_FILE = "MISSING_IN_FILE"
    EXPECTED = "EXPECTED"

    @property
    def raises_exception(self) -> bool:
        """Everything but MATCHED and EXPECTED needs a person."""
        return self not in (Outcome.MATCHED, Outcome.EXPECTED)


# Outcomes whose line settles (takes) the item it found.
SETTLING = (
    Outcome.MATCHED,
    Outcome.AMOUNT_MISMATCH,
    Outcome.FEE_MISMATCH,
    Outcome.STATUS_MISMATCH,
)


def ist_date(moment: datetime) -> date:
    """The calendar day in India of a moment: the day settlement files are cut by."""
    return moment.astimezone(IST).date()


def settlement_deadline(settlement_date: date, sla_days: int) -> date:
    """The day whose file must have settled an item of `settlement_date` at the latest."""
    return settlement_date + timedelta(days=sla_days)


def overdue_on(file_date: date, sla_days: int) -> date:
    """Items of this day or earlier are MISSING_IN_FILE once `file_date`'s file is reconciled
    without them."""
    return file_date - timedelta(days=sla_days)


def _settling_outcomes() -> str:
    return ", ".join(f"'{o.value}'" for o in SETTLING)


# The staged lines ($1 = the provider, $2 = the file id, $3 = its settlement_id), classified
# and stored in one statement, each line marked when it settles its item (`settles`, unique per
# item: see `settled_items`). Answers one row of figures as they stream by, instead of scanning
# a million stored lines again: the file's totals and its lines per outcome (`outcomes`, as the
# run stores them).
#
# Amounts become paisa by dropping the point (the format guarantees two decimals). Our own id
# in merchant_reference finds an item only when its provider reference did not: that lookup is
# one index probe for the few such lines, gated so the others never touch the books a second
# time (a hash of every book entry of the provider would cost as much as the main join).
CLASSIFY = f"""
WITH lines AS (
    SELECT i.line_number, i.type, i.provider_reference, coalesce(i.merchant_reference, '') AS
           merchant_reference, replace(i.amount, '.', '')::bigint AS amount_paisa,
           replace(i.fee, '.', '')::bigint AS fee_paisa,
           replace(i.tax, '.', '')::bigint AS tax_paisa, i.settled_at::timestamptz AS settled_at,
           i.method
    FROM incoming_lines i
),
-- Our payments and refunds of this provider by reference (one per reference, should two share
-- it). Hash joins against these cost a fraction of a lookup per line.
payments_by_reference AS (
    SELECT DISTINCT ON (b.provider_reference) b.payment_id, b.provider_reference, b.status,
           b.captured_paisa, b.fees_paisa, b.tax_paisa
    FROM book_payments b WHERE b.provider = $1
    ORDER BY b.provider_reference, b.payment_id
),
disputes_by_reference AS (
    SELECT DISTINCT ON (d.provider_reference) d.dispute_id, d.payment_id, d.provider_reference,
           d.amount_paisa
    FROM book_disputes d WHERE d.provider = $1
    ORDER BY d.provider_reference, d.dispute_id
),
refunds_by_reference AS (
    SELECT DISTINCT ON (b.provider_reference) b.refund_id, b.payment_id, b.provider_reference,
           b.status, b.amount_paisa
    FROM book_refunds b WHERE b.provider = $1 AND b.provider_reference <> ''
    ORDER BY b.provider_reference, b.refund_id
),
found AS (
    SELECT l.*,
           coalesce(d_ref.payment_id, p_ref.payment_id, p_id.payment_id, r_ref.payment_id,
                    r_id.payment_id) AS payment_id,
           coalesce(r_ref.refund_id, r_id.refund_id) AS refund_id,
           CASE WHEN l.type = 'payment' THEN coalesce(p_ref.payment_id, p_id.payment_id)
                WHEN l.type = 'refund' THEN coalesce(r_ref.refund_id, r_id.refund_id)
                WHEN l.type = 'chargeback' THEN d_ref.dispute_id
           END AS item_id,
           coalesce(p_ref.status, p_id.status, r_ref.status, r_id.status) AS our_status,
           coalesce(d_ref.amount_paisa, p_ref.captured_paisa, p_id.captured_paisa,
                    r_ref.amount_paisa, r_id.amount_paisa) AS our_amount,
           -- A provider charges no fee on a chargeback line (the dispute fee is the gateway's).
           CASE WHEN l.type = 'chargeback' THEN 0
                ELSE coalesce(p_ref.fees_paisa, p_id.fees_paisa, 0) END AS our_fee,
           CASE WHEN l.type = 'chargeback' THEN 0
                ELSE coalesce(p_ref.tax_paisa, p_id.tax_paisa, 0) END AS our_tax
    FROM lines l
    LEFT JOIN disputes_by_reference d_ref
        ON l.type = 'chargeback' AND d_ref.provider_reference = l.provider_reference
    LEFT JOIN payments_by_reference p_ref
        ON l.type = 'payment' AND p_ref.provider_reference = l.provider_reference
    -- OFFSET 0 keeps each lookup a gated index probe rather than a join the planner may
    -- turn into a hash of the whole book.
    LEFT JOIN LATERAL (
        SELECT b.payment_id, b.status, b.captured_paisa, b.fees_paisa, b.tax_paisa
        FROM book_payments b
        WHERE p_ref.payment_id IS NULL AND l.type IN ('payment', 'chargeback')
          AND b.payment_id = l.merchant_reference AND b.provider = $1
        OFFSET 0
    ) p_id ON true
    LEFT JOIN refunds_by_reference r_ref
        ON l.type = 'refund' AND r_ref.provider_reference = l.provider_reference
    LEFT JOIN LATERAL (
        SELECT b.refund_id, b.payment_id, b.status, b.amount_paisa
        FROM book_refunds b
        WHERE r_ref.refund_id IS NULL AND l.type = 'refund'
          AND b.refund_id = l.merchant_reference AND b.provider = $1
        OFFSET 0
    ) r_id ON true
),
-- Items the file lists more than once: the first line settles them, the later ones are
-- DUPLICATEs (a hash aggregate: the lines keep their order).
repeated AS (
    SELECT item_id, min(line_number) AS first_line FROM found
    WHERE item_id IS NOT NULL GROUP BY item_id HAVING count(*) > 1
),
ranked AS (
    SELECT f.*,
           s.item_id IS NOT NULL AND sf.settlement_id <> $3 AS settled_before,
           s.item_id IS NOT NULL AND sf.settlement_id = $3 AS restated,
           coalesce(rep.first_line <> f.line_number, false) AS repeated_in_file
    FROM found f
    LEFT JOIN settled_items s ON s.item_id = f.item_id
    LEFT JOIN settlement_files sf ON sf.settlement_file_id = s.settlement_file_id
    LEFT JOIN repeated rep ON rep.item_id = f.item_id
),
classified AS (
    SELECT r.*, CASE
        WHEN r.type = 'adjustment' OR r.item_id IS NULL THEN 'MISSING_INTERNALLY'
        WHEN r.settled_before OR (r.repeated_in_file AND NOT r.restated) THEN 'DUPLICATE'
        WHEN (r.type = 'payment' AND r.our_amount = 0)
          OR (r.type = 'refund' AND r.our_status <> 'PROCESSED') THEN 'STATUS_MISMATCH'
        WHEN r.amount_paisa <> r.our_amount THEN 'AMOUNT_MISMATCH'
        WHEN (r.fee_paisa, r.tax_paisa) <> (r.our_fee, r.our_tax) THEN 'FEE_MISMATCH'
        ELSE 'MATCHED'
    END AS outcome
    FROM ranked r
),
stored AS (
    INSERT INTO settlement_lines (settlement_file_id, line_number, type, provider_reference,
        merchant_reference, amount_paisa, fee_paisa, tax_paisa, settled_at, method, outcome,
        payment_id, refund_id, expected, actual, restated, settles)
    SELECT $2, c.line_number, c.type, c.provider_reference, c.merchant_reference,
           c.amount_paisa, c.fee_paisa, c.tax_paisa, c.settled_at, c.method, c.outcome,
           CASE WHEN c.outcome = 'MISSING_INTERNALLY' AND c.type <> 'chargeback' THEN NULL
                ELSE c.payment_id END,
           CASE WHEN c.outcome = 'MISSING_INTERNALLY' THEN NULL ELSE c.refund_id END,
           CASE c.outcome
               WHEN 'DUPLICATE' THEN 'settled once'
               WHEN 'STATUS_MISMATCH' THEN c.our_status
               WHEN 'AMOUNT_MISMATCH' THEN c.our_amount::text
               WHEN 'FEE_MISMATCH' THEN c.our_fee || '/' || c.our_tax
           END,
           CASE c.outcome
               WHEN 'MISSING_INTERNALLY' THEN c.type || ' ' || c.amount_paisa
               WHEN 'STATUS_MISMATCH' THEN 'SETTLED'
               WHEN 'AMOUNT_MISMATCH' THEN c.amount_paisa::text
               WHEN 'FEE_MISMATCH' THEN c.fee_paisa || '/' || c.tax_paisa
           END,
           c.restated,
           c.type IN ('payment', 'refund') AND NOT c.restated
               AND c.outcome IN ({_settling_outcomes()})
    FROM classified c
    RETURNING type, outcome, amount_paisa, fee_paisa, tax_paisa
),
per_outcome AS (
    SELECT outcome, count(*) AS n, sum(amount_paisa) AS amount FROM stored GROUP BY outcome
)
SELECT count(*) AS line_count,
       coalesce(sum(amount_paisa) FILTER (WHERE type = 'payment'), 0) AS payments,
       coalesce(sum(amount_paisa) FILTER (WHERE type = 'refund'), 0) AS refunds,
       coalesce(sum(amount_paisa) FILTER (WHERE type = 'chargeback'), 0) AS chargebacks,
       coalesce(sum(amount_paisa) FILTER (WHERE type = 'adjustment'), 0) AS adjustments,
       coalesce(sum(fee_paisa), 0) AS fees, coalesce(sum(tax_paisa), 0) AS tax,
       (SELECT coalesce(jsonb_object_agg(outcome, jsonb_build_object('count', n,
                                                                     'amount_paisa', amount)),
                        '{{}}'::jsonb)
        FROM per_outcome) AS outcomes
FROM stored
"""  # noqa: S608
