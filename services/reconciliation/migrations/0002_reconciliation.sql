-- Reconciliation: what the service learned from payments.events (its own copy of our books),
-- the settlement files' lines and their outcomes, runs, exceptions for people, and the
-- scheduler's claims. Nothing here names another service's schema.

-- Events applied, by id: a redelivered event is recognised and skipped.
CREATE TABLE applied_events (
    event_id    text PRIMARY KEY,
    payment_id  text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Payments as the orchestrator last described them, with what reconciliation did about them.
CREATE TABLE book_payments (
    payment_id          text PRIMARY KEY,
    merchant_id         text NOT NULL,
    provider            text NOT NULL DEFAULT '',
    method              text NOT NULL,
    provider_reference  text NOT NULL DEFAULT '',
    amount_paisa        bigint NOT NULL CHECK (amount_paisa >= 0),
    -- What was captured (0 until captured): what the provider must settle.
    captured_paisa      bigint NOT NULL DEFAULT 0 CHECK (captured_paisa >= 0),
    fees_paisa          bigint NOT NULL DEFAULT 0 CHECK (fees_paisa >= 0),
    tax_paisa           bigint NOT NULL DEFAULT 0 CHECK (tax_paisa >= 0),
    status              text NOT NULL,
    captured_at         timestamptz,
    -- The IST day the provider settles it (its capture day); NULL while nothing was captured.
    settlement_date     date,
    -- The payment's event sequence this row reflects: an older event never overwrites it.
    sequence            bigint NOT NULL,
    -- The run after which it became MISSING_IN_FILE (its deadline passed unsettled).
    missing_run_id      text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX book_payments_reference_idx
    ON book_payments (provider, provider_reference, payment_id);
CREATE INDEX book_payments_day_idx ON book_payments (provider, settlement_date)
    WHERE settlement_date IS NOT NULL;

CREATE TABLE book_refunds (
    refund_id           text PRIMARY KEY,
    payment_id          text NOT NULL,
    provider            text NOT NULL DEFAULT '',
    provider_reference  text NOT NULL DEFAULT '',
    amount_paisa        bigint NOT NULL CHECK (amount_paisa >= 0),
    status              text NOT NULL,
    -- REFUND, or REVERSAL (money returned for a payment the gateway had closed).
    kind                text NOT NULL,
    processed_at        timestamptz,
    -- The IST day the provider settles it (its processing day); NULL until PROCESSED.
    settlement_date     date,
    sequence            bigint NOT NULL,
    missing_run_id      text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX book_refunds_reference_idx ON book_refunds (provider, provider_reference);
CREATE INDEX book_refunds_payment_idx ON book_refunds (payment_id);
CREATE INDEX book_refunds_day_idx ON book_refunds (provider, settlement_date)
    WHERE settlement_date IS NOT NULL;

-- A file is ingested once per provider and day: an identical file for another day (a
-- header-only file, say) is that day's own file.
ALTER TABLE settlement_files
    DROP CONSTRAINT settlement_files_checksum_sha256_key,
    ADD CONSTRAINT settlement_files_once UNIQUE (provider, settlement_date, checksum_sha256),
    ADD COLUMN settlement_id text NOT NULL DEFAULT '',
    ADD COLUMN utr text NOT NULL DEFAULT '';

-- Every data line of every file ingested, with its outcome. Line numbers are the file's
-- (the header is line 1). No foreign key to settlement_files: the ingest writes a file's
-- row and its lines in one transaction, and a per-row key check would halve COPY's speed.
CREATE TABLE settlement_lines (
    settlement_file_id  text NOT NULL,
    line_number         integer NOT NULL CHECK (line_number > 1),
    type                text NOT NULL
        CHECK (type IN ('payment', 'refund', 'chargeback', 'adjustment')),
    provider_reference  text NOT NULL,
    merchant_reference  text NOT NULL,
    amount_paisa        bigint NOT NULL,
    fee_paisa           bigint NOT NULL CHECK (fee_paisa >= 0),
    tax_paisa           bigint NOT NULL CHECK (tax_paisa >= 0),
    settled_at          timestamptz NOT NULL,
    method              text NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN (
        'MATCHED', 'AMOUNT_MISMATCH', 'FEE_MISMATCH', 'STATUS_MISMATCH', 'DUPLICATE',
        'MISSING_INTERNALLY')),
    -- What the line was matched to, if anything.
    payment_id          text,
    refund_id           text,
    -- For a discrepancy: our value and the file's, as text (NULL when MATCHED).
    expected            text,
    actual              text,
    -- The item was settled by an earlier file of the same settlement (the day's file again,
    -- grown): judged again, but its exception, if any, was raised then.
    restated            boolean NOT NULL DEFAULT false,
    -- Posted to the orchestrator's ledger (MATCHED payment and refund lines only).
    journal_id          text,
    posted_at           timestamptz,
    -- The ledger refused the line for good (its gRPC status and message): not retried.
    post_error          text,
    PRIMARY KEY (settlement_file_id, line_number)
);

-- The ledger poster's queue: matched lines not posted yet.
CREATE INDEX settlement_lines_unposted_idx ON settlement_lines (settlement_file_id, line_number)
    WHERE outcome = 'MATCHED' AND posted_at IS NULL AND post_error IS NULL
      AND type IN ('payment', 'refund');

-- Which line settled each payment or refund (by its id): at most one, so any later line for
-- the same item is a DUPLICATE.
CREATE TABLE settled_items (
    item_id             text PRIMARY KEY,
    settlement_file_id  text NOT NULL,
    line_number         integer NOT NULL,
    settlement_id       text NOT NULL
);

CREATE TABLE reconciliation_runs (
    run_id              text PRIMARY KEY,
    -- One run per file: the same file again answers this run.
    settlement_file_id  text NOT NULL UNIQUE REFERENCES settlement_files (settlement_file_id),
    provider            text NOT NULL,
    settlement_date     date NOT NULL,
    source              text NOT NULL
        CHECK (source IN ('FETCHED', 'UPLOADED', 'SCHEDULED', 'COMMAND_LINE')),
    started_by          text NOT NULL,
    line_count          bigint NOT NULL,
    payments_paisa      bigint NOT NULL,
    refunds_paisa       bigint NOT NULL,
    chargebacks_paisa   bigint NOT NULL,
    adjustments_paisa   bigint NOT NULL,
    fees_paisa          bigint NOT NULL,
    tax_paisa           bigint NOT NULL,
    net_paisa           bigint NOT NULL,
    -- {"MATCHED": {"count": n, "amount_paisa": a}, ...}
    outcomes            jsonb NOT NULL,
    exception_count     bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX reconciliation_runs_day_idx ON reconciliation_runs (settlement_date, provider);

CREATE TABLE reconciliation_exceptions (
    exception_id        text PRIMARY KEY,
    type                text NOT NULL CHECK (type IN (
        'AMOUNT_MISMATCH', 'FEE_MISMATCH', 'STATUS_MISMATCH', 'DUPLICATE',
        'MISSING_INTERNALLY', 'MISSING_IN_FILE')),
    provider            text NOT NULL,
    settlement_date     date NOT NULL,
    run_id              text NOT NULL,
    settlement_file_id  text,
    line_number         integer,
    payment_id          text,
    refund_id           text,
    provider_reference  text NOT NULL DEFAULT '',
    expected            text NOT NULL DEFAULT '',
    actual              text NOT NULL DEFAULT '',
    amount_paisa        bigint NOT NULL,
    status              text NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'RESOLVED')),
    resolution_note     text,
    resolved_by         text,
    resolved_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'RESOLVED') = (resolved_at IS NOT NULL))
);

CREATE INDEX reconciliation_exceptions_list_idx
    ON reconciliation_exceptions (created_at DESC, exception_id DESC);
-- One MISSING_IN_FILE exception per payment or refund.
CREATE UNIQUE INDEX reconciliation_exceptions_missing_idx
    ON reconciliation_exceptions ((coalesce(refund_id, payment_id)))
    WHERE type = 'MISSING_IN_FILE';

-- The scheduled job's claims: each firing of RECON_SCHEDULE runs on exactly one replica.
CREATE TABLE schedule_claims (
    slot_at     timestamptz PRIMARY KEY,
    claimed_by  text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
