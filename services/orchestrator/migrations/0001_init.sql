-- Orchestrator schema: merchants, payments with their status history, and the event outbox.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE merchants (
    merchant_id text PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email       text NOT NULL DEFAULT '',
    vpa         text NOT NULL UNIQUE,
    category    text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The payment state machine's legal moves. orchestrator/domain/states.py holds the same table;
-- a test keeps the two equal, and the trigger below makes the database refuse anything else.
CREATE TABLE payment_transitions (
    from_status text NOT NULL,
    to_status   text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

INSERT INTO payment_transitions (from_status, to_status) VALUES
    ('CREATED', 'PENDING'),
    ('CREATED', 'REQUIRES_ACTION'),
    ('CREATED', 'AUTHORIZED'),
    ('CREATED', 'SUCCESS'),
    ('CREATED', 'FAILED'),
    ('CREATED', 'CANCELLED'),
    ('PENDING', 'REQUIRES_ACTION'),
    ('PENDING', 'AUTHORIZED'),
    ('PENDING', 'SUCCESS'),
    ('PENDING', 'FAILED'),
    ('PENDING', 'EXPIRED'),
    ('PENDING', 'CANCELLED'),
    ('REQUIRES_ACTION', 'PENDING'),
    ('REQUIRES_ACTION', 'AUTHORIZED'),
    ('REQUIRES_ACTION', 'SUCCESS'),
    ('REQUIRES_ACTION', 'FAILED'),
    ('REQUIRES_ACTION', 'EXPIRED'),
    ('REQUIRES_ACTION', 'CANCELLED'),
    ('AUTHORIZED', 'SUCCESS'),
    ('AUTHORIZED', 'FAILED'),
    ('AUTHORIZED', 'CANCELLED'),
    ('AUTHORIZED', 'EXPIRED'),
    ('SUCCESS', 'PARTIALLY_REFUNDED'),
    ('SUCCESS', 'REFUNDED'),
    ('PARTIALLY_REFUNDED', 'PARTIALLY_REFUNDED'),
    ('PARTIALLY_REFUNDED', 'REFUNDED');

CREATE TABLE payments (
    payment_id       text PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants (merchant_id),
    user_id          text NOT NULL DEFAULT '',
    amount_paisa     bigint NOT NULL CHECK (amount_paisa > 0),
    currency         char(3) NOT NULL,
    payment_method   text NOT NULL CHECK (payment_method IN ('UPI', 'CARD', 'WALLET', 'NET_BANKING')),
    status           text NOT NULL,
    fees_paisa       bigint NOT NULL DEFAULT 0 CHECK (fees_paisa >= 0),
    tax_paisa        bigint NOT NULL DEFAULT 0 CHECK (tax_paisa >= 0),
    description      text NOT NULL DEFAULT '',
    callback_url     text NOT NULL DEFAULT '',
    metadata         jsonb NOT NULL DEFAULT '{}',
    -- Non-sensitive method details only (VPA, wallet, bank code, card token): never card data.
    payment_details  jsonb NOT NULL DEFAULT '{}',
    payment_url      text NOT NULL DEFAULT '',
    capture_method   text NOT NULL DEFAULT 'AUTOMATIC' CHECK (capture_method IN ('AUTOMATIC', 'MANUAL')),
    provider         text NOT NULL DEFAULT '',
    external_txn_id  text NOT NULL DEFAULT '',
    gateway_response jsonb NOT NULL DEFAULT '{}',
    failure_reason   text NOT NULL DEFAULT '',
    -- Bumped on every status change: an optimistic lock and the event sequence number.
    version          integer NOT NULL DEFAULT 1,
    expires_at       timestamptz,
    processed_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_status_known CHECK (status IN (
        'CREATED', 'PENDING', 'REQUIRES_ACTION', 'AUTHORIZED', 'SUCCESS', 'FAILED',
        'EXPIRED', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED'))
);

-- Cursor pagination walks (created_at, payment_id) newest first within one merchant.
CREATE INDEX payments_merchant_created_idx ON payments (merchant_id, created_at DESC, payment_id DESC);

CREATE TABLE payment_status_history (
    id          bigserial PRIMARY KEY,
    payment_id  text NOT NULL REFERENCES payments (payment_id),
    from_status text,
    to_status   text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_status_history_payment_idx ON payment_status_history (payment_id, id);

-- A new payment must start at CREATED; a status change must be a listed transition.
-- search_path is pinned to this schema so the check holds whatever the writer's session uses.
CREATE FUNCTION enforce_payment_transition() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'CREATED' THEN
            RAISE EXCEPTION 'payment % must start in CREATED, not %', NEW.payment_id, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM payment_transitions t
        WHERE t.from_status = OLD.status AND t.to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'illegal payment transition % -> % for %', OLD.status, NEW.status, NEW.payment_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER payments_enforce_transition
    BEFORE INSERT OR UPDATE OF status ON payments
    FOR EACH ROW EXECUTE FUNCTION enforce_payment_transition();

-- Transactional outbox: a state change and its event commit together; the relay publishes
-- rows in id order (so per-payment order holds) and stamps published_at.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    topic        text NOT NULL,
    event_key    text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
