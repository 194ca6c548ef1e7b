-- Webhook schema: merchants' endpoints and the deliveries of events to them. Deliveries are
-- rows, not in-memory jobs, so a restart loses no pending retry.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE webhooks (
    webhook_id      text PRIMARY KEY,
    merchant_id     text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    -- Needed in the clear to sign every delivery; returned to the merchant only at creation.
    secret          text NOT NULL,
    description     text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'DISABLED')),
    disabled_reason text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_merchant_idx ON webhooks (merchant_id, created_at DESC);

CREATE TABLE deliveries (
    delivery_id        text PRIMARY KEY,
    webhook_id         text NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    event_id           text NOT NULL,
    event_type         text NOT NULL,
    -- The exact JSON body sent on every attempt (text, not jsonb, to keep its bytes).
    payload            text NOT NULL,
    status             text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED', 'DEAD_LETTERED')),
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- 0 when the last attempt got no HTTP answer (or there was none yet).
    last_response_code integer NOT NULL DEFAULT 0,
    last_error         text NOT NULL DEFAULT '',
    next_attempt_at    timestamptz,
    delivered_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Events arrive at least once from Kafka: one delivery per event per endpoint.
    UNIQUE (webhook_id, event_id)
);

-- The delivery worker's queue: what is due next.
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at)
    WHERE status IN ('PENDING', 'FAILED');
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, created_at DESC);
