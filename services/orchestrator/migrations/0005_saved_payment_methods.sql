-- Cards customers saved with a merchant: vault tokens and display data only, never a PAN.

CREATE TABLE saved_payment_methods (
    payment_method_id text PRIMARY KEY,
    merchant_id       text NOT NULL REFERENCES merchants (merchant_id),
    user_id           text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    token             text NOT NULL UNIQUE,
    fingerprint       text NOT NULL,
    last4             char(4) NOT NULL,
    brand             text NOT NULL,
    issuer            text NOT NULL DEFAULT '',
    expiry_month      text NOT NULL,
    expiry_year       text NOT NULL,
    holder_name       text NOT NULL DEFAULT '',
    display_name      text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- The same card saved twice for one customer is one saved method.
CREATE UNIQUE INDEX saved_payment_methods_card_idx
    ON saved_payment_methods (merchant_id, user_id, fingerprint);
