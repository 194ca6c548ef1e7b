-- Reconciliation schema: the providers' settlement files ingested so far.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE settlement_files (
    settlement_file_id text PRIMARY KEY,
    provider           text NOT NULL,
    settlement_date    date NOT NULL,
    -- Hex SHA-256 of the file's content: the same file is ingested once.
    checksum_sha256    text NOT NULL UNIQUE,
    line_count         integer NOT NULL DEFAULT 0 CHECK (line_count >= 0),
    ingested_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX settlement_files_day_idx ON settlement_files (settlement_date, provider);
