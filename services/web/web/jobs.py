"""The web service's background work: relay session events to Kafka, complete sessions whose
payment succeeded (from `payments.events`), expire sessions past their time."""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg

from gateway_core.kafka import ConsumedEvent, EventProducer, PublishError
from gateway_core.logging import get_logger
from web.repository import NOTIFY_CHANNEL, Repository
from web.sessions import SESSION_METADATA_KEY

log = get_logger(__name__)

BATCH_SIZE = 100
EXPIRY_INTERVAL_SECONDS = 5.0
# A payment in one of these has been paid: its session is COMPLETE.
PAID_STATUSES = frozenset({"SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"})


class OutboxRelay:
    """Publishes the session events the repository wrote, at least once, in id order.

    Rows are claimed with FOR UPDATE SKIP LOCKED inside a transaction held while publishing, so
    several replicas never publish the same row at once; a failure leaves the rows unpublished
    and the service bootstrap restarts the relay with backoff. Consumers dedupe by event_id.
    """

    def __init__(
        self, pool: asyncpg.Pool, producer: EventProducer, topic: str, poll_seconds: float = 1.0
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._poll_seconds = poll_seconds
        self._wakeup = asyncio.Event()

    async def run(self) -> None:
        await self._producer.start()
        try:
            async with self._pool.acquire() as listener:
                await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
                while True:
                    self._wakeup.clear()
                    if await self.publish_batch() < BATCH_SIZE:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
        finally:
            await self._producer.stop()

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def publish_batch(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_key, payload FROM outbox WHERE published_at IS NULL"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                BATCH_SIZE,
            )
            if not rows:
                return 0
            try:
                await self._producer.send_in_order(
                    [(self._topic, r["event_key"], bytes(r["payload"])) for r in rows]
                )
                acknowledged = len(rows)
                failure: PublishError | None = None
            except PublishError as exc:
                acknowledged, failure = exc.acknowledged, exc
            if acknowledged:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows[:acknowledged]],
                )
        if failure is not None:
            log.warning("session event publish failed; the relay restarts", error=str(failure))
            raise failure
        return acknowledged


class PaymentWatcher:
    """The `payments.events` handler: a payment made on a checkout page that succeeded
    completes its session (the page also asks, but the customer may have closed it)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def __call__(self, record: ConsumedEvent) -> None:
        try:
            document = json.loads(record.value)
            event_type = str(document.get("type", ""))
            payment = document.get("payment") or {}
        except (ValueError, AttributeError):
            return
        if not event_type.startswith("payment.") or not isinstance(payment, dict):
            return
        session_id = (payment.get("metadata") or {}).get(SESSION_METADATA_KEY)
        if session_id and payment.get("status") in PAID_STATUSES:
            completed = await self._repo.complete(session_id, str(payment["payment_id"]))
            if completed is not None:
                log.info("checkout session completed", checkout_session_id=session_id)


class SessionExpiry:
    """Expires OPEN sessions past their expires_at, each with its event; safe with several
    replicas (`Repository.expire_due`)."""

    def __init__(self, repo: Repository, interval: float = EXPIRY_INTERVAL_SECONDS) -> None:
        self._repo = repo
        self._interval = interval

    async def run(self) -> None:
        while True:
            await self.expire_due()
            await asyncio.sleep(self._interval)

    async def expire_due(self) -> int:
        """One round; returns how many sessions this replica expired."""
        expired = 0
        while batch := await self._repo.expire_due(BATCH_SIZE):
            expired += len(batch)
        return expired
