-- Fees and the double-entry ledger. orchestrator/domain/fees.py and orchestrator/domain/ledger.py
-- explain the rules; this file makes the database refuse anything that breaks them.
-- The runner sets search_path to this service's schema; nothing here names another schema.

-- The fee of each payment method. orchestrator/domain/fees.py holds the same numbers as
-- DEFAULT_PRICING; tests/unit/test_fees.py keeps both equal.
CREATE TABLE pricing (
    method      text PRIMARY KEY CHECK (method IN ('UPI', 'CARD', 'WALLET', 'NET_BANKING')),
    rate_bps    integer NOT NULL CHECK (rate_bps BETWEEN 0 AND 10000),
    fixed_paisa bigint NOT NULL CHECK (fixed_paisa >= 0),
    gst_bps     integer NOT NULL CHECK (gst_bps BETWEEN 0 AND 10000),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO pricing (method, rate_bps, fixed_paisa, gst_bps) VALUES
    ('UPI', 0, 0, 1800),
    ('CARD', 200, 0, 1800),
    ('WALLET', 190, 0, 1800),
    ('NET_BANKING', 190, 0, 1800);

-- Accounts are created on first use; the id says what the account is, e.g.
-- 'merchant_payable:MER_01J...:INR', 'provider_clearing:upi_core:INR', 'fee_revenue:INR'.
CREATE TABLE ledger_accounts (
    account_id  text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN (
        'provider_clearing', 'merchant_payable', 'fee_revenue', 'gst_payable')),
    merchant_id text REFERENCES merchants (merchant_id),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_merchant_owned CHECK ((kind = 'merchant_payable') = (merchant_id IS NOT NULL))
);

-- One money event. The same capture, or the same refund, can be posted only once.
CREATE TABLE journal_entries (
    journal_id  text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN (
        'capture', 'refund', 'chargeback', 'settlement', 'adjustment')),
    payment_id  text NOT NULL REFERENCES payments (payment_id),
    refund_id   text,
    merchant_id text NOT NULL REFERENCES merchants (merchant_id),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_entries_refund_id CHECK ((kind = 'refund') = (refund_id IS NOT NULL))
);

-- coalesce: a plain UNIQUE treats NULL refund ids as distinct, which would let a capture in twice.
CREATE UNIQUE INDEX journal_entries_once_idx
    ON journal_entries (kind, payment_id, coalesce(refund_id, ''));
CREATE INDEX journal_entries_merchant_idx ON journal_entries (merchant_id, currency);

-- Signed amounts: a debit is positive, a credit negative; a journal's postings sum to zero.
CREATE TABLE postings (
    id           bigserial PRIMARY KEY,
    journal_id   text NOT NULL REFERENCES journal_entries (journal_id),
    account_id   text NOT NULL REFERENCES ledger_accounts (account_id),
    amount_paisa bigint NOT NULL CHECK (amount_paisa <> 0)
);

CREATE INDEX postings_journal_idx ON postings (journal_id);
-- An account's balance is an index-only sum.
CREATE INDEX postings_account_idx ON postings (account_id) INCLUDE (amount_paisa);

-- Each journal with the money it moves (its debits), the sum of its postings (0 when balanced),
-- its line count, and the fee and GST it charges (credits to those accounts, as positive amounts).
CREATE VIEW journal_totals AS
SELECT j.journal_id, j.kind, j.payment_id, j.refund_id, j.merchant_id, j.currency,
       coalesce(sum(p.amount_paisa) FILTER (WHERE p.amount_paisa > 0), 0) AS amount_paisa,
       coalesce(sum(p.amount_paisa), 0) AS sum_paisa,
       count(p.id) AS lines,
       -coalesce(sum(p.amount_paisa) FILTER (WHERE a.kind = 'fee_revenue'), 0) AS fee_paisa,
       -coalesce(sum(p.amount_paisa) FILTER (WHERE a.kind = 'gst_payable'), 0) AS tax_paisa
FROM journal_entries j
LEFT JOIN postings p ON p.journal_id = j.journal_id
LEFT JOIN ledger_accounts a ON a.account_id = p.account_id
GROUP BY j.journal_id;

-- Checked at commit, when all of a journal's postings are in: at least two lines, all in the
-- journal's currency, summing to zero. Otherwise the whole transaction fails.
CREATE FUNCTION check_journal_balanced() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    total      numeric;
    lines      bigint;
    wrong_cur  bigint;
BEGIN
    SELECT coalesce(sum(p.amount_paisa), 0),
           count(p.id),
           count(p.id) FILTER (WHERE a.currency <> j.currency)
      INTO total, lines, wrong_cur
      FROM journal_entries j
      LEFT JOIN postings p ON p.journal_id = j.journal_id
      LEFT JOIN ledger_accounts a ON a.account_id = p.account_id
     WHERE j.journal_id = NEW.journal_id;
    IF total <> 0 OR lines < 2 OR wrong_cur > 0 THEN
        RAISE EXCEPTION 'journal % is unbalanced: % postings summing to % paisa, % in another currency',
            NEW.journal_id, lines, total, wrong_cur
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER postings_balanced
    AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION check_journal_balanced();

CREATE CONSTRAINT TRIGGER journal_entries_balanced
    AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION check_journal_balanced();

-- The ledger is append-only: a mistake is corrected by a new (adjustment) journal, so the
-- history of every balance stays readable.
CREATE FUNCTION refuse_ledger_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused; post an adjustment instead',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER journal_entries_append_only
    BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();

CREATE TRIGGER postings_append_only
    BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_rewrite();
