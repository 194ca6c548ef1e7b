-- Webhook deliveries for real (issue 9): endpoint status as the API names it, secret rotation,
-- deliveries to payments' own callback_url, leased claims, the attempt log, dead letters.
-- 0001's tables never held data (the service answered UNIMPLEMENTED), so `deliveries` is
-- rebuilt rather than altered column by column.

ALTER TABLE webhooks DROP CONSTRAINT webhooks_status_check;
UPDATE webhooks SET status = 'ENABLED' WHERE status = 'ACTIVE';
ALTER TABLE webhooks
    ALTER COLUMN status SET DEFAULT 'ENABLED',
    ADD CONSTRAINT webhooks_status_check CHECK (status IN ('ENABLED', 'DISABLED')),
    -- After a rotation, deliveries are signed with both secrets until this time.
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN disabled_at timestamptz,
    -- The first failed attempt since the last success (or creation); cleared by a success.
    -- Failing for WEBHOOK_DISABLE_AFTER disables the endpoint.
    ADD COLUMN failing_since timestamptz;

-- The secret that signs deliveries to payments' own callback_url, one per merchant.
CREATE TABLE callback_secrets (
    merchant_id                text PRIMARY KEY,
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

DROP TABLE deliveries;

CREATE TABLE deliveries (
    delivery_id        text PRIMARY KEY,
    merchant_id        text NOT NULL,
    -- NULL: a delivery to the payment's own callback_url (`url`), signed with the merchant's
    -- callback secret.
    webhook_id         text REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    url                text,
    event_id           text NOT NULL,
    event_type         text NOT NULL,
    payment_id         text NOT NULL DEFAULT '',
    -- The exact JSON body sent on every attempt (text, not jsonb, to keep its bytes).
    payload            text NOT NULL,
    -- When the event happened (its occurred_at): event-to-delivery latency starts here.
    event_at           timestamptz NOT NULL,
    -- W3C traceparent of the event's trace, linked from every attempt's span.
    traceparent        text NOT NULL DEFAULT '',
    status             text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- 0 when the last attempt got no HTTP answer (or there was none yet).
    last_response_code integer NOT NULL DEFAULT 0,
    last_error         text NOT NULL DEFAULT '',
    -- Due time while PENDING. A worker that claims a delivery moves it forward by a lease
    -- (WEBHOOK_TIMEOUT and a margin) and records the outcome only under its `lease_id`: a
    -- worker killed mid-attempt leaves a delivery that is due again when the lease runs out.
    next_attempt_at    timestamptz,
    lease_id           uuid,
    delivered_at       timestamptz,
    dead_lettered_at   timestamptz,
    -- When the dead-letter record reached KAFKA_TOPIC_WEBHOOKS (NULL: not yet).
    dead_letter_published_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((webhook_id IS NULL) <> (url IS NULL))
);

-- Events arrive at least once from Kafka: one delivery per event per endpoint, and one per
-- event to the payment's callback_url.
CREATE UNIQUE INDEX deliveries_event_endpoint_key ON deliveries (event_id, webhook_id)
    WHERE webhook_id IS NOT NULL;
CREATE UNIQUE INDEX deliveries_event_callback_key ON deliveries (event_id)
    WHERE webhook_id IS NULL;
-- The workers' queue: what is due next.
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'PENDING';
-- The delivery log, newest first, and its status filter.
CREATE INDEX deliveries_webhook_idx ON deliveries (webhook_id, delivery_id DESC);
-- Dead letters still to publish.
CREATE INDEX deliveries_dead_letter_idx ON deliveries (dead_lettered_at)
    WHERE dead_lettered_at IS NOT NULL AND dead_letter_published_at IS NULL;

CREATE TABLE delivery_attempts (
    delivery_id   text NOT NULL REFERENCES deliveries (delivery_id) ON DELETE CASCADE,
    attempt       integer NOT NULL CHECK (attempt > 0),
    attempted_at  timestamptz NOT NULL,
    response_code integer NOT NULL DEFAULT 0,
    error         text NOT NULL DEFAULT '',
    latency_ms    integer NOT NULL CHECK (latency_ms >= 0),
    PRIMARY KEY (delivery_id, attempt)
);
