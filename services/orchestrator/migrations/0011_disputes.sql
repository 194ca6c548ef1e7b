-- Disputes (issue 11): chargebacks raised by the card acquirers and the UPI switch on captured
-- payments, the merchant's answer, the provider's decision, and what each step does to money
-- (orchestrator/domain/disputes.py, orchestrator/domain/ledger.py).

-- The dispute state machine's legal moves. orchestrator/domain/disputes.py holds the same
-- table; tests/unit/test_dispute_states.py keeps the two equal, and the trigger below makes
-- the database refuse anything else.
CREATE TABLE dispute_transitions (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

INSERT INTO dispute_transitions (from_status, to_status) VALUES
    ('NEEDS_RESPONSE', 'UNDER_REVIEW'),
    ('NEEDS_RESPONSE', 'ACCEPTED'),
    ('NEEDS_RESPONSE', 'LOST'),
    ('UNDER_REVIEW', 'WON'),
    ('UNDER_REVIEW', 'LOST');

CREATE TABLE disputes (
    dispute_id          text PRIMARY KEY,
    payment_id          text NOT NULL REFERENCES payments (payment_id),
    merchant_id         text NOT NULL REFERENCES merchants (merchant_id),
    provider            text NOT NULL,
    -- The provider's case reference: one dispute per case, however often the provider calls.
    provider_reference  text NOT NULL CHECK (length(provider_reference) BETWEEN 1 AND 100),
    amount_paisa        bigint NOT NULL CHECK (amount_paisa > 0),
    currency            char(3) NOT NULL,
    reason_code         text NOT NULL CHECK (length(reason_code) BETWEEN 1 AND 20),
    reason              text NOT NULL DEFAULT '',
    phase               text NOT NULL DEFAULT 'CHARGEBACK'
        CHECK (phase IN ('CHARGEBACK', 'PRE_ARBITRATION', 'ARBITRATION')),
    status              text NOT NULL CHECK (status IN (
        'NEEDS_RESPONSE', 'UNDER_REVIEW', 'WON', 'LOST', 'ACCEPTED')),
    respond_by          timestamptz NOT NULL,
    fee_paisa           bigint NOT NULL CHECK (fee_paisa >= 0),
    tax_paisa           bigint NOT NULL CHECK (tax_paisa >= 0),
    -- The merchant's evidence ({field: text}), once submitted.
    evidence            jsonb,
    evidence_submitted_at timestamptz,
    -- When the provider acknowledged the merchant's answer (evidence or acceptance); NULL while
    -- it still has to be told (the disputes job retries).
    provider_notified_at timestamptz,
    -- When the disputes job may (re)send the answer, and how often it tried: it backs off.
    notify_after        timestamptz NOT NULL DEFAULT now(),
    notify_attempts     integer NOT NULL DEFAULT 0,
    resolved_at         timestamptz,
    -- Bumped on every status change.
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_reference),
    CONSTRAINT disputes_evidence_once CHECK ((evidence IS NULL) = (evidence_submitted_at IS NULL)),
    CONSTRAINT disputes_resolved CHECK (
        (status IN ('WON', 'LOST', 'ACCEPTED')) = (resolved_at IS NOT NULL))
);

CREATE INDEX disputes_merchant_created_idx ON disputes (merchant_id, created_at DESC, dispute_id DESC);
CREATE INDEX disputes_created_idx ON disputes (created_at DESC, dispute_id DESC);
CREATE INDEX disputes_payment_idx ON disputes (payment_id);
-- The disputes job: unanswered disputes past respond_by, and answers the provider has not
-- acknowledged yet.
CREATE INDEX disputes_due_idx ON disputes (respond_by) WHERE status = 'NEEDS_RESPONSE';
CREATE INDEX disputes_unnotified_idx ON disputes (notify_after)
    WHERE provider_notified_at IS NULL AND status IN ('UNDER_REVIEW', 'ACCEPTED');

-- A new dispute must start at NEEDS_RESPONSE; a status change must be a listed transition.
CREATE FUNCTION enforce_dispute_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'NEEDS_RESPONSE' THEN
            RAISE EXCEPTION 'dispute % must start in NEEDS_RESPONSE, not %', NEW.dispute_id, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM dispute_transitions t
        WHERE t.from_status = OLD.status AND t.to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'illegal dispute transition % -> % for %', OLD.status, NEW.status, NEW.dispute_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER disputes_enforce_transition
    BEFORE INSERT OR UPDATE OF status ON disputes
    FOR EACH ROW EXECUTE FUNCTION enforce_dispute_transition();

-- The dispute fee, per method (gateway_core/fees.py DEFAULT_PRICING holds the same numbers).
ALTER TABLE pricing ADD COLUMN dispute_fee_paisa bigint NOT NULL DEFAULT 0
    CHECK (dispute_fee_paisa >= 0);
UPDATE pricing SET dispute_fee_paisa = 15000;

-- Dispute journals: the chargeback when a dispute opens, its reversal when the merchant wins.
-- Each names its dispute, and is posted once per dispute.
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_kind_check;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_kind_check CHECK (kind IN (
    'capture', 'refund', 'chargeback', 'chargeback_reversal', 'settlement', 'adjustment'));
ALTER TABLE journal_entries ADD COLUMN dispute_id text REFERENCES disputes (dispute_id);
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_dispute_id CHECK (
    (kind IN ('chargeback', 'chargeback_reversal')) = (dispute_id IS NOT NULL));
DROP INDEX journal_entries_once_idx;
CREATE UNIQUE INDEX journal_entries_once_idx
    ON journal_entries (kind, payment_id, coalesce(refund_id, ''), coalesce(dispute_id, ''));
