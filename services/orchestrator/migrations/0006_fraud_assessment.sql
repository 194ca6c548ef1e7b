-- The fraud check's verdict, kept with the payment it was made for (shown by GET).

ALTER TABLE payments
    ADD COLUMN fraud_score integer CHECK (fraud_score BETWEEN 0 AND 1000),
    ADD COLUMN fraud_decision text CHECK (fraud_decision IN ('ALLOW', 'REVIEW', 'BLOCK', 'UNAVAILABLE')),
    -- [{"name": ..., "points": ..., "detail": ...}, ...]
    ADD COLUMN fraud_signals jsonb NOT NULL DEFAULT '[]';
