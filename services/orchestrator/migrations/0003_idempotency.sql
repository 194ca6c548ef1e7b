-- Idempotency keys (DESIGN.md §3): the first answer to a mutating call, replayed to retries that
-- carry the same Idempotency-Key. orchestrator/idempotency.py is the only reader and writer.
-- No foreign key to merchants: the caller's merchant comes from the JWT, and a call for an
-- unknown merchant must fail in its handler, not on this table.

CREATE TABLE idempotency_keys (
    merchant_id     text NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- The request fingerprint: full gRPC method name and SHA-256 of the deterministic encoding.
    method          text NOT NULL,
    request_hash    bytea NOT NULL CHECK (length(request_hash) = 32),
    state           text NOT NULL CHECK (state IN ('in_progress', 'completed')),
    -- The attempt running the handler; its writes are ignored once another took the key over.
    attempt_id      uuid,
    -- Exactly one of these once completed: the serialized response message, or the serialized
    -- google.rpc.Status of the error the handler raised.
    response        bytea,
    error_status    bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Refreshed while the handler runs; an in-progress row whose heartbeat stopped is stale.
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key),
    CONSTRAINT idempotency_keys_state_fields CHECK (
        (state = 'in_progress' AND attempt_id IS NOT NULL AND completed_at IS NULL
            AND response IS NULL AND error_status IS NULL)
        OR (state = 'completed' AND completed_at IS NOT NULL
            AND (response IS NULL) <> (error_status IS NULL))
    )
);

-- The purge job deletes by expiry.
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
