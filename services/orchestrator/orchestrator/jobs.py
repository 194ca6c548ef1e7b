"""Background work: status inquiries, expiry, refund retries and idempotency-key cleanup.

Each loop is a ServiceApp background task (restarted with backoff if it crashes). Several
orchestrator replicas may run them at once: every change goes through locked, idempotent
transitions, so doing the same work twice changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway_core.logging import get_logger
from orchestrator.idempotency import IdempotencyStore
from orchestrator.processing import PaymentProcessor
from orchestrator.repository import Repository

log = get_logger(__name__)
BATCH = 50


class Jobs:
    def __init__(
        self,
        repo: Repository,
        processor: PaymentProcessor,
        idempotency: IdempotencyStore,
        *,
        interval_seconds: float = 0.5,
    ) -> None:
        self._repo = repo
        self._processor = processor
        self._idempotency = idempotency
        self._interval = interval_seconds

    async def run_inquiries(self) -> None:
        await self._forever(self._inquire_due)

    async def run_expiry(self) -> None:
        await self._forever(self._expire_due)

    async def run_refund_retries(self) -> None:
        await self._forever(self._retry_refunds, interval=5.0)

    async def run_key_cleanup(self) -> None:
        await self._forever(self._idempotency.purge_expired, interval=600.0)

    async def _inquire_due(self) -> object:
        for payment in await self._repo.due_inquiries(BATCH):
            await self._processor.inquire(payment)
        return None

    async def _expire_due(self) -> object:
        for payment in await self._repo.expired_open_payments(BATCH):
            await self._processor.expire(payment)
        return None

    async def _retry_refunds(self) -> object:
        for payment, refund in await self._repo.stale_pending_refunds(BATCH):
            await self._processor.settle_refund(payment, refund)
        return None

    async def _forever(
        self, step: Callable[[], Awaitable[object]], *, interval: float | None = None
    ) -> None:
        while True:
            await step()
            await asyncio.sleep(self._interval if interval is None else interval)
