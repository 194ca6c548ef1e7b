-- Provider interaction: status inquiries for payments whose outcome is unknown, the callbacks
-- already applied (a replay changes nothing), and refunds with their own lifecycle.

ALTER TABLE payments
    -- When to ask the provider again about a payment whose outcome is still unknown.
    ADD COLUMN next_inquiry_at timestamptz,
    ADD COLUMN inquiry_attempts integer NOT NULL DEFAULT 0;

CREATE INDEX payments_inquiry_due_idx ON payments (next_inquiry_at)
    WHERE next_inquiry_at IS NOT NULL;
CREATE INDEX payments_open_expiry_idx ON payments (expires_at)
    WHERE status IN ('CREATED', 'PENDING', 'REQUIRES_ACTION');

CREATE TABLE provider_callbacks (
    provider    text NOT NULL,
    event_id    text NOT NULL,
    payment_id  text NOT NULL,
    status      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE refunds (
    refund_id          text PRIMARY KEY,
    payment_id         text NOT NULL REFERENCES payments (payment_id),
    merchant_id        text NOT NULL,
    amount_paisa       bigint NOT NULL CHECK (amount_paisa > 0),
    currency           char(3) NOT NULL,
    status             text NOT NULL CHECK (status IN ('PENDING', 'PROCESSED', 'FAILED')),
    reason             text NOT NULL DEFAULT '',
    metadata           jsonb NOT NULL DEFAULT '{}',
    external_refund_id text NOT NULL DEFAULT '',
    failure_reason     text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz
);

CREATE INDEX refunds_payment_idx ON refunds (payment_id, created_at);
