-- Money safety (issue 8): operations that hold the payment while a provider works, background
-- jobs that isolate each payment, reversals recorded as refunds, keyed request fingerprints.

-- CAPTURING and CANCELLING hold a payment while its capture, void or cancel is at the
-- provider: a second operation finds it taken (409) instead of racing it, and a provider that
-- does not answer leaves it there until the status inquiry finds out what happened.
ALTER TABLE payments DROP CONSTRAINT payments_status_known;
ALTER TABLE payments ADD CONSTRAINT payments_status_known CHECK (status IN (
    'CREATED', 'PENDING', 'REQUIRES_ACTION', 'AUTHORIZED', 'CAPTURING', 'SUCCESS', 'FAILED',
    'EXPIRED', 'CANCELLING', 'CANCELLED', 'PARTIALLY_REFUNDED', 'REFUNDED'));

-- Captures, cancels and authorization expiry now always pass through CAPTURING or CANCELLING
-- (the provider is told first), and a held authorization is never failed by a stray report.
DELETE FROM payment_transitions WHERE (from_status, to_status) IN (
    ('CREATED', 'CANCELLED'),
    ('PENDING', 'CANCELLED'),
    ('REQUIRES_ACTION', 'CANCELLED'),
    ('AUTHORIZED', 'SUCCESS'),
    ('AUTHORIZED', 'CANCELLED'),
    ('AUTHORIZED', 'EXPIRED'),
    ('AUTHORIZED', 'FAILED'));

-- A payment left CREATED (its handler died before the provider answered) expires too, once
-- the provider says it holds nothing for it.
INSERT INTO payment_transitions (from_status, to_status) VALUES
    ('CREATED', 'EXPIRED'),
    ('AUTHORIZED', 'CAPTURING'),
    ('CAPTURING', 'SUCCESS'),
    ('CAPTURING', 'AUTHORIZED'),
    ('CREATED', 'CANCELLING'),
    ('PENDING', 'CANCELLING'),
    ('REQUIRES_ACTION', 'CANCELLING'),
    ('AUTHORIZED', 'CANCELLING'),
    ('CANCELLING', 'CANCELLED'),
    ('CANCELLING', 'EXPIRED'),
    ('CANCELLING', 'AUTHORIZED');

ALTER TABLE payments
    -- What a CAPTURING or CANCELLING payment is doing, and the status it started from; set
    -- exactly while the payment is in one of those two.
    ADD COLUMN operation text CHECK (operation IN ('CAPTURE', 'CANCEL', 'EXPIRE')),
    ADD COLUMN operation_from text,
    -- Background jobs claim a payment until this moment (so replicas do not work on it
    -- twice), and a payment whose job failed is left alone until it (backoff).
    ADD COLUMN job_lease_until timestamptz,
    ADD COLUMN job_failures integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT payments_operation_in_flight CHECK (
        (status IN ('CAPTURING', 'CANCELLING')) = (operation IS NOT NULL)
        AND (operation IS NULL) = (operation_from IS NULL));

-- Expiry covers held authorizations too: expires_at is the capture deadline once AUTHORIZED
-- (AUTHORIZATION_TTL, 5 days by default). Authorizations held before this migration still carry
-- their creation-time deadline, long past: give them the default TTL from their authorization
-- instead of voiding them all on the first expiry round.
UPDATE payments
SET expires_at = greatest(expires_at, coalesce(processed_at, updated_at) + interval '5 days')
WHERE status = 'AUTHORIZED';
DROP INDEX payments_open_expiry_idx;
CREATE INDEX payments_open_expiry_idx ON payments (expires_at)
    WHERE status IN ('CREATED', 'PENDING', 'REQUIRES_ACTION', 'AUTHORIZED');

-- A reversal gives back money a provider took for a payment the gateway had already closed
-- (a late success): a real refund, with its postings and events, kept apart from the
-- merchant's own refunds.
ALTER TABLE refunds
    ADD COLUMN kind text NOT NULL DEFAULT 'REFUND' CHECK (kind IN ('REFUND', 'REVERSAL'));
CREATE UNIQUE INDEX refunds_one_reversal_idx ON refunds (payment_id) WHERE kind = 'REVERSAL';

-- Fingerprints are now keyed HMACs of the request with card data replaced. The unkeyed
-- SHA-256 of the raw request (card number and CVV included) must not stay: it is dropped,
-- and a retry of such a key is matched on its method alone, so it still gets its stored
-- answer and never a second effect.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_request_hash_check;
ALTER TABLE idempotency_keys ALTER COLUMN request_hash DROP NOT NULL;
UPDATE idempotency_keys SET request_hash = NULL;
ALTER TABLE idempotency_keys
    ADD CONSTRAINT idempotency_keys_request_hash_check
        CHECK (request_hash IS NULL OR length(request_hash) = 32),
    -- The resource the attempt's first effect created or changed (a payment or refund id).
    ADD COLUMN resource_id text;
