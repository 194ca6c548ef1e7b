-- The vault's keys, the CVV's time limit and the detokenize audit trail (DESIGN.md §6).

-- The Tink keysets, each stored only encrypted under the key-encryption key derived from the
-- master key (ENCRYPTION_KEY). One row; `version` goes up on every rotation or key retirement,
-- so every replica notices a change and reloads. Writers of card ciphertexts hold a KEY SHARE
-- lock on the row for their transaction and rotation takes FOR UPDATE: a key is never retired
-- while a ciphertext under it is being written.
CREATE TABLE keysets (
    id                 smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version            bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    -- Tink encrypted keyset (binary) of the AES256-GCM card-data keys.
    card_keyset        bytea NOT NULL,
    -- Tink encrypted keyset of the HMAC-SHA256 fingerprint key (never rotated).
    fingerprint_keyset bytea NOT NULL,
    -- Not secret, kept in clear for operators: the key new ciphertexts use, and all keys.
    primary_key_id     bigint NOT NULL,
    key_ids            bigint[] NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The CVV is held only until the authorization that needs it, and never longer than this.
ALTER TABLE cards ADD COLUMN cvv_expires_at timestamptz;
ALTER TABLE cards ADD CONSTRAINT cards_cvv_has_expiry
    CHECK ((cvv_ciphertext IS NULL) = (cvv_expires_at IS NULL));
ALTER TABLE cards ADD CONSTRAINT cards_token_format
    CHECK (token ~ '^tok_[A-Za-z0-9_-]{24}$');
CREATE INDEX cards_cvv_expiry_idx ON cards (cvv_expires_at) WHERE cvv_expires_at IS NOT NULL;

-- Every request for card data (Detokenize) and every CVV release, allowed or refused.
CREATE TABLE detokenize_audit (
    id             bigserial PRIMARY KEY,
    action         text NOT NULL CHECK (action IN ('DETOKENIZE', 'RELEASE_CVV')),
    -- The verified calling service; '' when the call was refused before it was identified.
    caller         text NOT NULL,
    -- What an unverified token claimed to be (refused calls), for the investigation.
    claimed_caller text NOT NULL DEFAULT '',
    token          text NOT NULL,
    payment_id     text NOT NULL,
    reason         text NOT NULL,
    allowed        boolean NOT NULL,
    -- OK, NOT_FOUND, INVALID_ARGUMENT, DECRYPT_FAILED, or why the caller was refused.
    outcome        text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX detokenize_audit_token_idx ON detokenize_audit (token, at);
CREATE INDEX detokenize_audit_at_idx ON detokenize_audit (at);

-- An audit trail is append-only (PCI DSS 10.3): the application may add rows, never change or
-- remove them. Pruning past the retention period is a deliberate, reviewed migration.
CREATE FUNCTION detokenize_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'detokenize_audit is append-only';
END;
$$;

CREATE TRIGGER detokenize_audit_no_update_or_delete
    BEFORE UPDATE OR DELETE ON detokenize_audit
    FOR EACH ROW EXECUTE FUNCTION detokenize_audit_append_only();

CREATE TRIGGER detokenize_audit_no_truncate
    BEFORE TRUNCATE ON detokenize_audit
    FOR EACH STATEMENT EXECUTE FUNCTION detokenize_audit_append_only();
