-- Refund retries with several replicas (issue 13): the refund-retry job leases each stale
-- PENDING refund it works on (`Repository.claim_stale_refunds`), so the jobs of two replicas
-- never ask the provider about one refund at once. NULL: never claimed; a worker that dies
-- lets its lease run out.
ALTER TABLE refunds ADD COLUMN next_retry_at timestamptz;

CREATE INDEX refunds_pending_idx ON refunds (created_at) WHERE status = 'PENDING';
