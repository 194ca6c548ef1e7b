-- Emails the webhook service sends (receipts to customers, notices to merchants): rows, not
-- in-memory jobs, so a restart loses none and several replicas never send one twice at once.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE emails (
    email_id        text PRIMARY KEY,
    -- What the email is about, e.g. the event id of a receipt: one email per key, however
    -- often the event is consumed.
    dedupe_key      text NOT NULL UNIQUE,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The SMTP server's answer or the connection error of the last failed attempt.
    last_error      text NOT NULL DEFAULT '',
    -- When the sender may take it (again); while one sender has it, the end of its lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The sender's queue: what is due next.
CREATE INDEX emails_due_idx ON emails (next_attempt_at) WHERE status = 'PENDING';
