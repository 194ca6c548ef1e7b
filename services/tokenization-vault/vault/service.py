"""What the vault does with cards, whoever asks: tokenize, reveal (audited), forget, re-key.

Callers are authorized by the servicer before they get here; this layer owns the transactions
that tie ciphertexts to the keys they are under and accesses to their audit rows.

Tokens are not deduplicated: tokenizing the same card twice, even for the same merchant and
user, gives two tokens with the same fingerprint. A token carries its own expiry, holder name
and the CVV held for ONE authorization; sharing a token between two payments in flight would
let one payment's ReleaseCvv take the other's CVV. Callers that keep saved cards dedupe them
by fingerprint and delete the tokens they do not keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from gateway_core.cards import ValidCard
from gateway_core.errors import DataLoss, NotFound
from gateway_core.logging import get_logger
from vault import repository
from vault.crypto import (
    CardKeys,
    CryptoError,
    cvv_context,
    key_id_of,
    new_token,
    pan_context,
)
from vault.keyring import Keyring
from vault.repository import AuditEntry, CardRecord, Reencrypted, SealedCard

log = get_logger(__name__)

DETOKENIZE = "DETOKENIZE"
RELEASE_CVV = "RELEASE_CVV"


@dataclass(frozen=True)
class NewCard:
    merchant_id: str
    user_id: str
    holder_name: str
    card: ValidCard


@dataclass(frozen=True)
class RevealedCard:
    """Card data in clear, for the one authorization that needs it. Prints without it."""

    card_number: str = field(repr=False)
    cvv: str = field(repr=False)  # "" when no CVV is held
    expiry_month: str
    expiry_year: str
    holder_name: str


@dataclass(frozen=True)
class Access:
    """Who asks for card data and why, as the audit trail records it."""

    caller: str
    payment_id: str
    reason: str = ""


class CardVault:
    def __init__(self, pool: asyncpg.Pool, keyring: Keyring, *, cvv_ttl_seconds: int) -> None:
        self._pool = pool
        self._keyring = keyring
        self._cvv_ttl_seconds = cvv_ttl_seconds
        # Rows the re-encryption job could not decrypt: skipped (and reported) rather than
        # retried forever ahead of the rows it can move.
        self._unreadable: set[str] = set()

    async def start(self) -> CardKeys:
        """Create the keysets on first start and prove the master key opens them."""
        async with self._pool.acquire() as conn:
            return await self._keyring.ensure(conn)

    async def tokenize(self, new: NewCard) -> CardRecord:
        number = new.card.number
        token = new_token()
        async with self._pool.acquire() as conn, conn.transaction():
            keys = await self._keyring.locked(conn)
            pan = number.expose()
            cvv = new.card.cvv
            pan_ciphertext = keys.encrypt(pan.encode(), pan_context(token, new.merchant_id))
            return await repository.insert_card(
                conn,
                repository.NewCardRow(
                    token=token,
                    merchant_id=new.merchant_id,
                    user_id=new.user_id,
                    fingerprint=keys.fingerprint(new.merchant_id, pan),
                    pan_ciphertext=pan_ciphertext,
                    cvv_ciphertext=(
                        keys.encrypt(cvv.expose().encode(), cvv_context(token, new.merchant_id))
                        if cvv is not None
                        else None
                    ),
                    key_id=key_id_of(pan_ciphertext),
                    last4=number.last4,
                    brand=number.brand.value,
                    issuer=number.issuer,
                    expiry_month=new.card.expiry_month,
                    expiry_year=new.card.expiry_year,
                    holder_name=new.holder_name,
                    cvv_ttl_seconds=self._cvv_ttl_seconds,
                ),
            )

    async def card(self, token: str) -> CardRecord:
        record = await repository.get_card(self._pool, token)
        if record is None:
            raise _token_not_found()
        return record

    async def delete(self, token: str) -> None:
        if not await repository.delete_card(self._pool, token):
            raise _token_not_found()

    async def detokenize(self, token: str, access: Access) -> RevealedCard:
        """The card data behind `token`; the access is audited in the same transaction, so no
        card data leaves without its audit row committed."""
        revealed: RevealedCard | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            keys = await self._keyring.locked(conn)
            sealed = await repository.sealed_card(conn, token)
            outcome = "NOT_FOUND"
            if sealed is not None:
                try:
                    revealed = _reveal(keys, sealed)
                    outcome = "OK"
                except CryptoError:
                    outcome = "DECRYPT_FAILED"
            await repository.add_audit(conn, _audit(DETOKENIZE, token, access, outcome))
        if sealed is None:
            raise _token_not_found()
        if revealed is None:
            log.error("card data did not decrypt", token=token)
            raise DataLoss("the card data could not be decrypted", reason="CARD_DATA_UNREADABLE")
        return revealed

    async def release_cvv(self, token: str, access: Access) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            found = await repository.release_cvv(conn, token)
            outcome = "OK" if found else "NOT_FOUND"
            await repository.add_audit(conn, _audit(RELEASE_CVV, token, access, outcome))
        if not found:
            raise _token_not_found()

    async def audit_refusal(
        self, action: str, token: str, access: Access, outcome: str, *, claimed_caller: str = ""
    ) -> None:
        """Record a request for card data that was refused (unknown caller, bad request)."""
        entry = AuditEntry(
            action=action,
            caller=access.caller,
            claimed_caller=claimed_caller,
            token=token,
            payment_id=access.payment_id,
            reason=access.reason,
            allowed=False,
            outcome=outcome,
        )
        await repository.add_audit(self._pool, entry)

    async def audit_bad_request(self, action: str, token: str, access: Access) -> None:
        """An authorized caller's request that was invalid: allowed, but nothing revealed."""
        await repository.add_audit(self._pool, _audit(action, token, access, "INVALID_ARGUMENT"))

    async def rotate_keys(self) -> CardKeys:
        async with self._pool.acquire() as conn:
            keys = await self._keyring.rotate(conn)
        log.info("card keys rotated", primary_key_id=keys.primary_key_id, key_ids=keys.key_ids)
        return keys

    async def current_keys(self) -> CardKeys:
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._keyring.locked(conn)

    async def reencrypt_batch(self, limit: int) -> int:
        """Move up to `limit` rows from older keys to the primary; the number moved."""
        async with self._pool.acquire() as conn, conn.transaction():
            keys = await self._keyring.locked(conn)
            stale = await repository.lock_stale_ciphertexts(
                conn, keys.primary_key_id, limit, skip=sorted(self._unreadable)
            )
            moved: list[Reencrypted] = []
            for sealed in stale:
                try:
                    moved.append(_reencrypt(keys, sealed))
                except CryptoError:
                    self._unreadable.add(sealed.token)
                    log.error(
                        "card data did not decrypt; left under its old key",
                        token=sealed.token,
                        key_id=sealed.key_id,
                    )
            await repository.store_reencrypted(conn, keys.primary_key_id, moved)
        return len(moved)

    async def retire_unused_keys(self) -> tuple[int, ...]:
        async with self._pool.acquire() as conn:
            retired = await self._keyring.retire_unused(conn)
        if retired:
            log.info("old card keys destroyed: no ciphertext uses them", key_ids=retired)
        return retired

    async def purge_expired_cvvs(self) -> int:
        purged = await repository.purge_expired_cvvs(self._pool)
        if purged:
            log.info("expired CVVs purged", count=purged)
        return purged


def _reveal(keys: CardKeys, sealed: SealedCard) -> RevealedCard:
    pan = keys.decrypt(sealed.pan_ciphertext, pan_context(sealed.token, sealed.merchant_id))
    cvv = (
        keys.decrypt(sealed.cvv_ciphertext, cvv_context(sealed.token, sealed.merchant_id))
        if sealed.cvv_ciphertext is not None
        else b""
    )
    return RevealedCard(
        card_number=pan.decode(),
        cvv=cvv.decode(),
        expiry_month=sealed.expiry_month,
        expiry_year=sealed.expiry_year,
        holder_name=sealed.holder_name,
    )


def _reencrypt(keys: CardKeys, sealed: SealedCard) -> Reencrypted:
    pan_ad = pan_context(sealed.token, sealed.merchant_id)
    cvv_ad = cvv_context(sealed.token, sealed.merchant_id)
    pan = keys.encrypt(keys.decrypt(sealed.pan_ciphertext, pan_ad), pan_ad)
    cvv = (
        keys.encrypt(keys.decrypt(sealed.cvv_ciphertext, cvv_ad), cvv_ad)
        if sealed.cvv_ciphertext is not None
        else None
    )
    return Reencrypted(sealed.token, pan, cvv)


def _audit(action: str, token: str, access: Access, outcome: str) -> AuditEntry:
    return AuditEntry(
        action=action,
        caller=access.caller,
        token=token,
        payment_id=access.payment_id,
        reason=access.reason,
        allowed=True,
        outcome=outcome,
    )


def _token_not_found() -> NotFound:
    # The token is not echoed: a caller that sent something else in its place (a card number)
    # must not see it come back in an error.
    return NotFound("no card with this token", reason="TOKEN_NOT_FOUND")
