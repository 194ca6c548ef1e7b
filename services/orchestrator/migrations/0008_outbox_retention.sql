-- Published outbox rows are deleted after OUTBOX_RETENTION (orchestrator/outbox.py OutboxPurge);
-- the purge finds them by publication time. Unpublished rows never match.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
