-- Payment attempts (issue 12): each try of a payment at a provider, in order. A card payment
-- that fails over from an unavailable acquirer to the next has a second attempt row; before
-- this the acquirers passed over were a string in gateway_response.failed_over_from.
CREATE TABLE payment_attempts (
    payment_id     text NOT NULL REFERENCES payments (payment_id),
    attempt_number integer NOT NULL CHECK (attempt_number >= 1),
    provider       text NOT NULL,
    -- SERVING: the provider serving the payment (the payment's status is its outcome);
    -- UNAVAILABLE: it did not process the payment, which moved on; SKIPPED: its circuit
    -- breaker was open, so it was not tried.
    status         text NOT NULL CHECK (status IN ('SERVING', 'UNAVAILABLE', 'SKIPPED')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, attempt_number)
);

-- Backfill: the acquirers each payment failed over from ("razorpay,payu(circuit open)"), then
-- the provider serving it (none when every acquirer was unavailable).
INSERT INTO payment_attempts (payment_id, attempt_number, provider, status, created_at)
SELECT p.payment_id,
       passed.n,
       regexp_replace(passed.name, '\(circuit open\)$', ''),
       CASE WHEN passed.name LIKE '%(circuit open)' THEN 'SKIPPED' ELSE 'UNAVAILABLE' END,
       p.created_at
FROM payments p,
     unnest(string_to_array(p.gateway_response ->> 'failed_over_from', ','))
         WITH ORDINALITY AS passed (name, n)
WHERE coalesce(p.gateway_response ->> 'failed_over_from', '') <> '';

INSERT INTO payment_attempts (payment_id, attempt_number, provider, status, created_at)
SELECT p.payment_id,
       1 + coalesce(cardinality(string_to_array(
           nullif(p.gateway_response ->> 'failed_over_from', ''), ',')), 0),
       p.provider,
       'SERVING',
       p.created_at
FROM payments p
WHERE p.failure_reason <> 'gateways_unavailable';
