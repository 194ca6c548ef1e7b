"""The vault's background work: move ciphertexts to the newest key, and forget expired CVVs.

Both run in every replica (ServiceApp background tasks, restarted with backoff if they crash).
Re-encryption takes rows with FOR UPDATE SKIP LOCKED in short transactions, so replicas share
the work and tokenize/detokenize never wait on it for more than one batch; old tokens keep
working throughout, since older keys are destroyed only once no ciphertext uses them.
"""

from __future__ import annotations

import asyncio

from gateway_core.logging import get_logger
from vault.service import CardVault

log = get_logger(__name__)


class Jobs:
    def __init__(
        self,
        vault: CardVault,
        *,
        reencrypt_interval_seconds: float = 5.0,
        purge_interval_seconds: float = 10.0,
        batch_size: int = 200,
    ) -> None:
        self._vault = vault
        self._reencrypt_interval = reencrypt_interval_seconds
        self._purge_interval = purge_interval_seconds
        self._batch_size = batch_size

    async def run_reencryption(self) -> None:
        while True:
            await self.reencrypt_all()
            await asyncio.sleep(self._reencrypt_interval)

    async def run_cvv_purge(self) -> None:
        while True:
            await self._vault.purge_expired_cvvs()
            await asyncio.sleep(self._purge_interval)

    async def reencrypt_all(self) -> int:
        """Move every ciphertext under an older key to the primary, then destroy the keys no
        ciphertext needs any more. Returns the number of rows moved."""
        total = 0
        while moved := await self._vault.reencrypt_batch(self._batch_size):
            total += moved
            log.info("card data re-encrypted under the primary key", rows=moved, total=total)
            await asyncio.sleep(0)  # let requests in between batches
        await self._vault.retire_unused_keys()
        return total
