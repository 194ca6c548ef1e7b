"""Background work: status inquiries, expiry, refund retries, idempotency-key cleanup, and
disputes (unanswered ones past respond_by are lost; answers the provider missed are resent).

Each loop is a ServiceApp background task (restarted with backoff if it crashes). Several
orchestrator replicas may run them at once: due payments and stale refunds are leased to one
worker at a time (`Repository.claim_due_inquiries`, `claim_expired`, `claim_stale_refunds`),
and every change goes through locked, idempotent transitions, so doing the same work twice
changes nothing.

One payment never holds up the others: each due payment is worked on in its own task, a
bounded number at a time, and one whose work fails is logged, counted and left alone for a
growing while (its lease doubles as the backoff) while the rest go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from prometheus_client import Counter

from gateway_core.errors import Unavailable
from gateway_core.logging import get_logger
from orchestrator.disputes import Disputes
from orchestrator.domain.payment import Payment, Refund
from orchestrator.idempotency import IdempotencyStore
from orchestrator.processing import PaymentProcessor
from orchestrator.providers.base import ProviderTimeout
from orchestrator.repository import Repository

log = get_logger(__name__)
BATCH = 50
# Payments worked on at once per job: provider calls overlap, the database pool is spared.
CONCURRENCY = 10
# A claimed payment is hidden from other workers this long: longer than a whole round (a
# batch worked CONCURRENCY at a time, each a few provider deadlines), so no two overlap.
LEASE = timedelta(minutes=5)
# A stale refund is asked about again this long after a retry took it: longer than a round (a
# batch settled CONCURRENCY at a time, one provider deadline each).
REFUND_LEASE = timedelta(seconds=30)
FIRST_BACKOFF = timedelta(seconds=2)
MAX_BACKOFF = timedelta(minutes=10)

JOB_FAILURES = Counter(
    "orchestrator_job_failures_total",
    "Payments (or refunds) a background job could not finish this round, by job and kind",
    ["job", "kind"],
)


def backoff(failures: int) -> timedelta:
    """How long a payment that failed `failures` times before this one is left alone."""
    return min(FIRST_BACKOFF * (1 << min(failures, 16)), MAX_BACKOFF)


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
        await self._forever(self.inquire_due)

    async def run_expiry(self) -> None:
        await self._forever(self.expire_due)

    async def run_refund_retries(self) -> None:
        await self._forever(self.retry_refunds, interval=5.0)

    async def run_key_cleanup(self) -> None:
        await self._forever(self._idempotency.purge_expired, interval=600.0)

    async def run_disputes(self, disputes: Disputes) -> None:
        async def step() -> None:
            await disputes.lose_overdue()
            await disputes.renotify()

        await self._forever(step)

    async def inquire_due(self) -> int:
        """One round of status inquiries; returns how many payments it worked on."""
        due = await self._repo.claim_due_inquiries(BATCH, LEASE)
        await self._each_payment("inquiry", due, self._processor.inquire)
        return len(due)

    async def expire_due(self) -> int:
        """One round of expiry; returns how many payments it worked on."""
        due = await self._repo.claim_expired(BATCH, LEASE)
        await self._each_payment("expiry", due, self._processor.expire)
        return len(due)

    async def retry_refunds(self) -> int:
        stale = await self._repo.claim_stale_refunds(BATCH, REFUND_LEASE)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def settle(payment: Payment, refund: Refund) -> None:
            async with limit:
                try:
                    await self._processor.settle_refund(payment, refund)
                except Exception:
                    JOB_FAILURES.labels(job="refund-retry", kind="error").inc()
                    log.exception("refund retry failed", refund_id=refund.refund_id)

        await asyncio.gather(*(settle(payment, refund) for payment, refund in stale))
        return len(stale)

    async def _each_payment(
        self,
        job: str,
        payments: Sequence[Payment],
        work: Callable[[Payment], Awaitable[object]],
    ) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(payment: Payment) -> None:
            async with limit:
                try:
                    await work(payment)
                except (ProviderTimeout, Unavailable) as exc:
                    await self._failed(job, "provider", payment)
                    log.warning(
                        "provider unavailable; the payment waits its turn again",
                        job=job,
                        payment_id=payment.payment_id,
                        error=str(exc),
                    )
                except Exception:
                    await self._failed(job, "error", payment)
                    log.exception("job failed on a payment", job=job, payment_id=payment.payment_id)
                else:
                    await self._repo.job_succeeded(payment.payment_id)

        await asyncio.gather(*(one(payment) for payment in payments))

    async def _failed(self, job: str, kind: str, payment: Payment) -> None:
        JOB_FAILURES.labels(job=job, kind=kind).inc()
        try:
            await self._repo.job_failed(payment.payment_id, backoff(payment.job_failures))
        except Exception:
            # The lease from the claim still keeps the payment out of the next rounds.
            log.exception("could not record a job failure", payment_id=payment.payment_id)

    async def _forever(
        self, step: Callable[[], Awaitable[object]], *, interval: float | None = None
    ) -> None:
        while True:
            await step()
            await asyncio.sleep(self._interval if interval is None else interval)
