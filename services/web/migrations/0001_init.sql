-- Web schema: hosted checkout sessions, their events (outbox), and dashboard sign-ins.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE checkout_sessions (
    checkout_session_id text PRIMARY KEY,
    merchant_id         text NOT NULL,
    status              text NOT NULL DEFAULT 'OPEN'
        CHECK (status IN ('OPEN', 'COMPLETE', 'EXPIRED')),
    amount_paisa        integer NOT NULL CHECK (amount_paisa > 0),
    currency            text NOT NULL,
    description         text NOT NULL DEFAULT '',
    customer_name       text NOT NULL DEFAULT '',
    customer_email      text NOT NULL DEFAULT '',
    customer_phone      text NOT NULL DEFAULT '',
    methods             text[] NOT NULL CHECK (cardinality(methods) > 0),
    return_url          text NOT NULL,
    metadata            jsonb NOT NULL DEFAULT '{}',
    -- The payment that completed the session; the latest attempt while OPEN.
    payment_id          text NOT NULL DEFAULT '',
    idempotency_key     text,
    request_digest      text NOT NULL DEFAULT '',
    expires_at          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    -- A session closes once: COMPLETE or EXPIRED with when, OPEN without.
    CHECK ((status = 'OPEN') = (closed_at IS NULL)),
    CHECK (status <> 'COMPLETE' OR payment_id <> '')
);

CREATE UNIQUE INDEX checkout_sessions_idempotency_idx
    ON checkout_sessions (merchant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX checkout_sessions_due_idx ON checkout_sessions (expires_at) WHERE status = 'OPEN';

-- Events written in the same transaction as the change, relayed to Kafka (payments.events).
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_key    text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Dashboard sign-ins: an argon2id hash, never the password.
CREATE TABLE dashboard_logins (
    email         text PRIMARY KEY CHECK (email = lower(email)),
    merchant_id   text NOT NULL DEFAULT '',
    is_admin      boolean NOT NULL DEFAULT false,
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (is_admin OR merchant_id <> '')
);

-- Signed-in browsers: the cookie holds a random token; only its SHA-256 is kept.
CREATE TABLE dashboard_sessions (
    token_digest text PRIMARY KEY,
    email        text NOT NULL REFERENCES dashboard_logins (email) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
