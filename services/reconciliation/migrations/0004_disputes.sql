-- Disputes as reconciliation learns them from payments.events (dispute.* events): the
-- provider's chargeback lines are matched against them by the provider's case reference.

CREATE TABLE book_disputes (
    dispute_id          text PRIMARY KEY,
    payment_id          text NOT NULL,
    provider            text NOT NULL,
    -- The provider's case reference: what its settlement file's chargeback line names.
    provider_reference  text NOT NULL,
    amount_paisa        bigint NOT NULL CHECK (amount_paisa > 0),
    status              text NOT NULL,
    opened_at           timestamptz NOT NULL,
    -- The dispute's own version (from the event): an older event never overwrites it.
    version             bigint NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX book_disputes_reference_idx ON book_disputes (provider, provider_reference);
