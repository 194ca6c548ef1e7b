-- Analytics and the transactions report: one fact row per payment, refund and dispute, kept
-- up to date from payments.events in the same transaction that records the event as applied
-- (applied_events), so a redelivered event changes nothing. Each row keeps the event sequence
-- it reflects: an older event delivered late never overwrites a newer row. Queries filter on
-- the creation time (and the merchant), which the indexes below serve.

CREATE TABLE analytics_payments (
    payment_id          text PRIMARY KEY,
    merchant_id         text NOT NULL,
    payment_method      text NOT NULL,
    provider            text NOT NULL DEFAULT '',
    status              text NOT NULL,
    currency            text NOT NULL,
    card_brand          text NOT NULL DEFAULT '',
    failure_reason      text NOT NULL DEFAULT '',
    -- ALLOW, REVIEW, BLOCK, UNAVAILABLE, or '' when the payment was not scored.
    fraud_decision      text NOT NULL DEFAULT '',
    provider_reference  text NOT NULL DEFAULT '',
    amount_paisa        bigint NOT NULL CHECK (amount_paisa >= 0),
    -- What was captured (0 until the money was taken).
    captured_paisa      bigint NOT NULL DEFAULT 0 CHECK (captured_paisa >= 0),
    refunded_paisa      bigint NOT NULL DEFAULT 0 CHECK (refunded_paisa >= 0),
    fees_paisa          bigint NOT NULL DEFAULT 0 CHECK (fees_paisa >= 0),
    tax_paisa           bigint NOT NULL DEFAULT 0 CHECK (tax_paisa >= 0),
    created_at          timestamptz NOT NULL,
    -- The payment's first move to SUCCESS (NULL until then).
    succeeded_at        timestamptz,
    -- The payment's own last change (its snapshot's updated_at).
    changed_at          timestamptz NOT NULL,
    sequence            bigint NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX analytics_payments_created_idx ON analytics_payments (created_at, payment_id);
CREATE INDEX analytics_payments_merchant_idx
    ON analytics_payments (merchant_id, created_at, payment_id);

CREATE TABLE analytics_refunds (
    refund_id           text PRIMARY KEY,
    payment_id          text NOT NULL,
    merchant_id         text NOT NULL,
    -- REFUND (asked for by the merchant) or REVERSAL (money that arrived late, sent back).
    kind                text NOT NULL,
    status              text NOT NULL,
    currency            text NOT NULL,
    amount_paisa        bigint NOT NULL CHECK (amount_paisa >= 0),
    provider_reference  text NOT NULL DEFAULT '',
    failure_reason      text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL,
    processed_at        timestamptz,
    sequence            bigint NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX analytics_refunds_created_idx ON analytics_refunds (created_at, refund_id);
CREATE INDEX analytics_refunds_merchant_idx
    ON analytics_refunds (merchant_id, created_at, refund_id);

CREATE TABLE analytics_disputes (
    dispute_id          text PRIMARY KEY,
    payment_id          text NOT NULL,
    merchant_id         text NOT NULL,
    status              text NOT NULL,
    phase               text NOT NULL,
    reason_code         text NOT NULL DEFAULT '',
    currency            text NOT NULL,
    amount_paisa        bigint NOT NULL CHECK (amount_paisa >= 0),
    created_at          timestamptz NOT NULL,
    resolved_at         timestamptz,
    -- The event's sequence and the dispute's own updated_at: the newer pair wins.
    sequence            bigint NOT NULL,
    changed_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX analytics_disputes_created_idx ON analytics_disputes (created_at, dispute_id);
CREATE INDEX analytics_disputes_merchant_idx
    ON analytics_disputes (merchant_id, created_at, dispute_id);
