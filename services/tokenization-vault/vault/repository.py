"""SQL of the vault's own schema: card rows, their ciphertexts, and the audit trail.

Functions take a connection so that `CardVault` composes them into transactions with the
keyset lock (see `Keyring.locked`). Nothing here sees card data in clear: only ciphertexts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.masking import mask_sensitive
from paygate.vault.v1 import vault_pb2

TOKEN_FORMAT = re.compile(r"tok_[A-Za-z0-9_-]{24}")
_AUDIT_TEXT_MAX = 200
Connection: TypeAlias = asyncpg.Connection | asyncpg.Pool

_CARD_COLUMNS = """
    token, merchant_id, user_id, fingerprint, key_id, last4, brand, issuer, expiry_month,
    expiry_year, holder_name, created_at,
    (cvv_ciphertext IS NOT NULL AND cvv_expires_at > now()) AS cvv_held
"""


@dataclass(frozen=True)
class CardRecord:
    """A tokenized card's metadata: everything but the ciphertexts."""

    token: str
    merchant_id: str
    user_id: str
    fingerprint: str
    key_id: int
    last4: str
    brand: str
    issuer: str
    expiry_month: str
    expiry_year: str
    holder_name: str
    created_at: datetime
    cvv_held: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CardRecord:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    def to_proto(self) -> vault_pb2.Card:
        created_at = Timestamp()
        created_at.FromDatetime(self.created_at)
        return vault_pb2.Card(
            token=self.token,
            merchant_id=self.merchant_id,
            user_id=self.user_id,
            last4=self.last4,
            brand=self.brand,
            issuer=self.issuer,
            fingerprint=self.fingerprint,
            expiry_month=self.expiry_month,
            expiry_year=self.expiry_year,
            holder_name=self.holder_name,
            cvv_held=self.cvv_held,
            created_at=created_at,
        )


@dataclass(frozen=True)
class NewCardRow:
    token: str
    merchant_id: str
    user_id: str
    fingerprint: str
    pan_ciphertext: bytes = field(repr=False)
    cvv_ciphertext: bytes | None = field(repr=False)
    key_id: int
    last4: str
    brand: str
    issuer: str
    expiry_month: str
    expiry_year: str
    holder_name: str
    cvv_ttl_seconds: int


@dataclass(frozen=True)
class SealedCard:
    """A card row's ciphertexts (the CVV only while it is held) and what goes with them."""

    token: str
    merchant_id: str
    key_id: int
    pan_ciphertext: bytes = field(repr=False)
    cvv_ciphertext: bytes | None = field(repr=False)
    expiry_month: str
    expiry_year: str
    holder_name: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SealedCard:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Reencrypted:
    token: str
    pan_ciphertext: bytes = field(repr=False)
    cvv_ciphertext: bytes | None = field(repr=False)


@dataclass(frozen=True)
class AuditEntry:
    action: str  # DETOKENIZE or RELEASE_CVV
    caller: str
    token: str
    payment_id: str
    reason: str
    allowed: bool
    outcome: str
    claimed_caller: str = ""


async def insert_card(conn: Connection, new: NewCardRow) -> CardRecord:
    row = await conn.fetchrow(
        f"""
        INSERT INTO cards (
            token, merchant_id, user_id, fingerprint, pan_ciphertext, cvv_ciphertext,
            cvv_expires_at, key_id, last4, brand, issuer, expiry_month, expiry_year, holder_name
        )
        VALUES (
            $1, $2, $3, $4, $5, $6::bytea,
            CASE WHEN $6::bytea IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END,
            $8, $9, $10, $11, $12, $13, $14
        )
        RETURNING {_CARD_COLUMNS}
        """,  # noqa: S608 - the column list is ours
        new.token,
        new.merchant_id,
        new.user_id,
        new.fingerprint,
        new.pan_ciphertext,
        new.cvv_ciphertext,
        float(new.cvv_ttl_seconds),
        new.key_id,
        new.last4,
        new.brand,
        new.issuer,
        new.expiry_month,
        new.expiry_year,
        new.holder_name,
    )
    assert row is not None
    return CardRecord.from_row(row)


async def get_card(conn: Connection, token: str) -> CardRecord | None:
    query = f"SELECT {_CARD_COLUMNS} FROM cards WHERE token = $1"  # noqa: S608 - ours
    row = await conn.fetchrow(query, token)
    return CardRecord.from_row(row) if row is not None else None


async def sealed_card(conn: Connection, token: str) -> SealedCard | None:
    """The ciphertexts of a card; a CVV past its time limit counts as gone, purged or not."""
    row = await conn.fetchrow(
        """
        SELECT token, merchant_id, key_id, pan_ciphertext, expiry_month, expiry_year,
               holder_name,
               CASE WHEN cvv_expires_at > now() THEN cvv_ciphertext END AS cvv_ciphertext
        FROM cards WHERE token = $1
        """,
        token,
    )
    return SealedCard.from_row(row) if row is not None else None


async def delete_card(conn: Connection, token: str) -> bool:
    deleted = await conn.fetchval("DELETE FROM cards WHERE token = $1 RETURNING true", token)
    return bool(deleted)


async def release_cvv(conn: Connection, token: str) -> bool:
    """Forget a card's CVV; False when there is no such card (releasing twice is fine)."""
    found = await conn.fetchval(
        """
        UPDATE cards SET cvv_ciphertext = NULL, cvv_expires_at = NULL
        WHERE token = $1 RETURNING true
        """,
        token,
    )
    return bool(found)


async def purge_expired_cvvs(conn: Connection) -> int:
    result: str = await conn.execute(
        """
        UPDATE cards SET cvv_ciphertext = NULL, cvv_expires_at = NULL
        WHERE cvv_expires_at <= now()
        """
    )
    return int(result.split()[-1])


async def lock_stale_ciphertexts(
    conn: asyncpg.Connection, primary_key_id: int, limit: int, skip: Sequence[str] = ()
) -> list[SealedCard]:
    """Rows whose ciphertexts are under an older key, locked for this transaction.

    SKIP LOCKED: several replicas share the work, and a row busy elsewhere (a CVV release) is
    simply taken on the next pass. The CVV is taken whatever its expiry, so that every
    ciphertext of the row moves to the new key together.
    """
    rows = await conn.fetch(
        """
        SELECT token, merchant_id, key_id, pan_ciphertext, cvv_ciphertext, expiry_month,
               expiry_year, holder_name
        FROM cards
        WHERE key_id <> $1 AND NOT (token = ANY($3::text[]))
        ORDER BY key_id, token
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        primary_key_id,
        limit,
        list(skip),
    )
    return [SealedCard.from_row(row) for row in rows]


async def store_reencrypted(
    conn: asyncpg.Connection, key_id: int, moved: Sequence[Reencrypted]
) -> None:
    await conn.executemany(
        """
        UPDATE cards SET pan_ciphertext = $2, cvv_ciphertext = $3, key_id = $4
        WHERE token = $1
        """,
        [(m.token, m.pan_ciphertext, m.cvv_ciphertext, key_id) for m in moved],
    )


async def uses_other_keys(conn: Connection, primary_key_id: int) -> bool:
    """True while any ciphertext is still under a key other than the primary."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM cards WHERE key_id <> $1)", primary_key_id
    )
    return bool(found)


async def add_audit(conn: Connection, entry: AuditEntry) -> None:
    """Record an access to card data. Free text is masked and cut: a caller that sends a card
    number in the wrong field must not get it written here in clear."""
    await conn.execute(
        """
        INSERT INTO detokenize_audit (
            action, caller, claimed_caller, token, payment_id, reason, allowed, outcome
        )
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        """,
        entry.action,
        _audit_text(entry.caller),
        _audit_text(entry.claimed_caller),
        entry.token if TOKEN_FORMAT.fullmatch(entry.token) else _audit_text(entry.token),
        _audit_text(entry.payment_id),
        _audit_text(entry.reason),
        entry.allowed,
        entry.outcome,
    )


def _audit_text(value: str) -> str:
    masked: str = mask_sensitive(value)
    return masked[:_AUDIT_TEXT_MAX]
