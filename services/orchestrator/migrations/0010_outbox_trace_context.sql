-- The W3C traceparent of the request that wrote an event: the relay sends it as the Kafka
-- record's `traceparent` header, so consumers (webhook deliveries) link to the payment's trace.
-- Empty for events written outside a traced request (background jobs).
ALTER TABLE outbox ADD COLUMN traceparent text NOT NULL DEFAULT '';
