"""The vault's keys as stored in the `keysets` row: created once, rotated, retired, cached.

Every replica caches the decrypted keys of one keyset version. A transaction that writes or
reads ciphertexts starts with `locked()`: it takes a KEY SHARE lock on the keysets row and
reloads the keys if another replica changed them. Rotation and retirement take FOR UPDATE on
that row, so they wait for those transactions and those transactions wait for them. Hence:

- after a rotation commits, every replica encrypts under the new primary at once;
- a key is destroyed only after a check, under the lock, that no ciphertext uses it, and no
  transaction can add one under it meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from gateway_core.errors import Internal
from vault import crypto, repository
from vault.crypto import CardKeys, KeyEncryptionKey

_ROW = "SELECT version, card_keyset, fingerprint_keyset FROM keysets WHERE id = 1"


class Keyring:
    def __init__(self, kek: KeyEncryptionKey) -> None:
        self._kek = kek
        self._cached: CardKeys | None = None

    async def ensure(self, conn: asyncpg.Connection) -> CardKeys:
        """The current keys, creating the keysets on the vault's first start.

        Replicas starting together may each generate keysets: one insert wins and everyone
        uses the stored ones. Raises CryptoError when the master key cannot open them.
        """
        await conn.execute(
            """
            INSERT INTO keysets (id, card_keyset, fingerprint_keyset, primary_key_id, key_ids)
            VALUES (1, $1, $2, $3, $4)
            ON CONFLICT (id) DO NOTHING
            """,
            *self._new_keysets(),
        )
        return self._remember(self._parse(await _fetch_row(conn, _ROW)))

    async def locked(self, conn: asyncpg.Connection) -> CardKeys:
        """The current keys, held steady until `conn`'s transaction ends (call inside one)."""
        version = await conn.fetchval("SELECT version FROM keysets WHERE id = 1 FOR KEY SHARE")
        if version is None:
            raise Internal("the vault has no keysets", reason="KEYSETS_MISSING")
        cached = self._cached
        if cached is not None and cached.version == version:
            return cached
        return self._remember(self._parse(await _fetch_row(conn, _ROW)))

    async def rotate(self, conn: asyncpg.Connection) -> CardKeys:
        """Add a new primary key; older keys stay to decrypt until re-encryption moves off them."""
        async with conn.transaction():
            row = await _fetch_row(conn, _ROW + " FOR UPDATE")
            card_keyset = crypto.with_new_primary(self._kek.open_card_keyset(row["card_keyset"]))
            keys = await self._store(conn, card_keyset, row["fingerprint_keyset"])
        return self._remember(keys)

    async def retire_unused(self, conn: asyncpg.Connection) -> tuple[int, ...]:
        """Destroy the non-primary keys once no ciphertext is under them; the ids destroyed."""
        async with conn.transaction():
            row = await _fetch_row(conn, _ROW + " FOR UPDATE")
            card_keyset = self._kek.open_card_keyset(row["card_keyset"])
            primary, ids = crypto.key_ids(card_keyset)
            if len(ids) == 1 or await repository.uses_other_keys(conn, primary):
                return ()
            keys = await self._store(
                conn, crypto.primary_only(card_keyset), row["fingerprint_keyset"]
            )
        self._remember(keys)
        return tuple(i for i in ids if i != primary)

    async def _store(
        self, conn: asyncpg.Connection, card_keyset: crypto.KeysetHandle, fingerprint: bytes
    ) -> CardKeys:
        primary, ids = crypto.key_ids(card_keyset)
        version = await conn.fetchval(
            """
            UPDATE keysets
            SET card_keyset = $1, primary_key_id = $2, key_ids = $3, version = version + 1,
                updated_at = now()
            WHERE id = 1
            RETURNING version
            """,
            self._kek.seal_card_keyset(card_keyset),
            primary,
            list(ids),
        )
        return CardKeys.from_keysets(
            version, card_keyset, self._kek.open_fingerprint_keyset(fingerprint)
        )

    def _new_keysets(self) -> tuple[bytes, bytes, int, list[int]]:
        card_keyset = crypto.new_card_keyset()
        primary, ids = crypto.key_ids(card_keyset)
        return (
            self._kek.seal_card_keyset(card_keyset),
            self._kek.seal_fingerprint_keyset(crypto.new_fingerprint_keyset()),
            primary,
            list(ids),
        )

    def _parse(self, row: Mapping[str, Any]) -> CardKeys:
        return CardKeys.from_keysets(
            row["version"],
            self._kek.open_card_keyset(row["card_keyset"]),
            self._kek.open_fingerprint_keyset(row["fingerprint_keyset"]),
        )

    def _remember(self, keys: CardKeys) -> CardKeys:
        # Versions only grow; a slow reload must not replace newer keys with older ones.
        if self._cached is None or keys.version >= self._cached.version:
            self._cached = keys
        return keys


async def _fetch_row(conn: asyncpg.Connection, query: str) -> Mapping[str, Any]:
    row = await conn.fetchrow(query)
    if row is None:
        raise Internal("the vault has no keysets", reason="KEYSETS_MISSING")
    result: Mapping[str, Any] = row
    return result
