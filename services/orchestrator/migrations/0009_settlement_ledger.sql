-- The settlement ledger (issue 10): reconciliation posts each matched line of a provider's
-- settlement file (paygate.ledger.v1.SettlementLedgerService), moving the money from
-- provider_clearing to the bank account it was paid into, less the provider's fees
-- (orchestrator/domain/ledger.py, settlement_entry).

-- bank:<provider>:<currency>: what a provider's settlements paid into the gateway's bank
-- account; provider_fees:<provider>:<currency>: the fees and GST it kept (an expense).
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check CHECK (kind IN (
    'provider_clearing', 'merchant_payable', 'fee_revenue', 'gst_payable', 'bank',
    'provider_fees'));

-- A settlement journal names the refund it settles, if it settles one; journal_entries_once_idx
-- (kind, payment_id, refund_id) then lets a payment, and each refund, be settled once.
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_refund_id;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_refund_id CHECK (
    CASE kind
        WHEN 'refund' THEN refund_id IS NOT NULL
        WHEN 'settlement' THEN true
        ELSE refund_id IS NULL
    END);

-- Each posted line once, by its idempotency key, with what it said: a repeat answers the first
-- result, a different line under the same key is refused. The same line of the same settlement
-- under a second key (the day's file fetched again, with a new checksum) is recorded against
-- the first posting's journal: several keys, one journal.
CREATE TABLE settlement_lines (
    line_key      text PRIMARY KEY CHECK (length(line_key) BETWEEN 1 AND 200),
    journal_id    text NOT NULL REFERENCES journal_entries (journal_id),
    provider      text NOT NULL,
    payment_id    text NOT NULL REFERENCES payments (payment_id),
    refund_id     text,
    type          text NOT NULL CHECK (type IN ('PAYMENT', 'REFUND')),
    amount_paisa  bigint NOT NULL CHECK (amount_paisa > 0),
    fee_paisa     bigint NOT NULL CHECK (fee_paisa >= 0),
    tax_paisa     bigint NOT NULL CHECK (tax_paisa >= 0),
    settlement_id text NOT NULL,
    utr           text NOT NULL,
    posted_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT settlement_lines_refund_id CHECK ((type = 'REFUND') = (refund_id IS NOT NULL)),
    CONSTRAINT settlement_lines_fee_fits CHECK (fee_paisa + tax_paisa <= amount_paisa)
);

CREATE INDEX settlement_lines_settlement_idx ON settlement_lines (settlement_id);
CREATE INDEX settlement_lines_journal_idx ON settlement_lines (journal_id);

-- Like the journals they record, posted lines are never rewritten.
CREATE TRIGGER settlement_lines_append_only
    BEFORE UPDATE OR DELETE ON settlement_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();
