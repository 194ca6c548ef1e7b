-- Vault schema: tokenized cards. The card number and the CVV exist here only as Tink AEAD
-- ciphertexts; the keyset that decrypts them is itself encrypted under the master key.
-- The runner sets search_path to this service's schema; nothing here names another schema.

CREATE TABLE cards (
    token          text PRIMARY KEY,
    merchant_id    text NOT NULL,
    user_id        text NOT NULL DEFAULT '',
    -- Keyed hash of the card number: equal for the same card within one merchant.
    fingerprint    text NOT NULL,
    pan_ciphertext bytea NOT NULL,
    -- Present only between tokenization and the authorization that needs it (ReleaseCvv).
    cvv_ciphertext bytea,
    -- Tink key id the ciphertexts are under, so re-encryption finds those under older keys.
    key_id         bigint NOT NULL,
    last4          char(4) NOT NULL,
    brand          text NOT NULL CHECK (brand IN ('VISA', 'MASTERCARD', 'RUPAY', 'AMEX', 'DINERS')),
    issuer         text NOT NULL DEFAULT '',
    expiry_month   text NOT NULL,
    expiry_year    text NOT NULL,
    holder_name    text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cards_merchant_fingerprint_idx ON cards (merchant_id, fingerprint);
CREATE INDEX cards_key_id_idx ON cards (key_id);
