"""Dead letters to KAFKA_TOPIC_WEBHOOKS: a record per delivery whose retry schedule is spent.

The delivery row says it is dead-lettered in the same transaction that gives up on it; this
task publishes the rows not yet published and marks them, so a broker outage delays the
records and loses none (at least once: a consumer dedupes by `delivery_id`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import asyncpg

from gateway_core.kafka import EventProducer
from gateway_core.logging import get_logger
from webhook.events import rfc3339

log = get_logger(__name__)

BATCH = 100
POLL_SECONDS = 1.0
RECORD_TYPE = "webhook.delivery.dead_lettered"


class DeadLetterPublisher:
    def __init__(self, pool: asyncpg.Pool, bootstrap_servers: Sequence[str], topic: str) -> None:
        self._pool = pool
        self._bootstrap = list(bootstrap_servers)
        self._topic = topic

    async def run(self) -> None:
        producer = EventProducer(self._bootstrap, client_id="webhook-dead-letters")
        await producer.start()
        try:
            while True:
                if await self.publish_batch(producer) < BATCH:
                    await asyncio.sleep(POLL_SECONDS)
        finally:
            await producer.stop()

    async def publish_batch(self, producer: EventProducer) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT delivery_id, merchant_id, webhook_id, url, event_id, event_type,
                    payment_id, attempts, last_response_code, last_error, dead_lettered_at
                FROM deliveries
                WHERE dead_lettered_at IS NOT NULL AND dead_letter_published_at IS NULL
                ORDER BY dead_lettered_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
                """,
                BATCH,
            )
            if not rows:
                return 0
            await producer.send_in_order(
                [(self._topic, r["merchant_id"], _record(r)) for r in rows]
            )
            await conn.execute(
                "UPDATE deliveries SET dead_letter_published_at = now() "
                "WHERE delivery_id = ANY($1)",
                [r["delivery_id"] for r in rows],
            )
        log.info("dead letters published", count=len(rows))
        return len(rows)


def _record(row: asyncpg.Record) -> bytes:
    document = {
        "type": RECORD_TYPE,
        "delivery_id": row["delivery_id"],
        "merchant_id": row["merchant_id"],
        "webhook_id": row["webhook_id"] or "",
        # A callback_url delivery names its URL; an endpoint's is known by its id.
        "callback_url": row["url"] or "",
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "payment_id": row["payment_id"],
        "attempts": row["attempts"],
        "last_response_code": row["last_response_code"],
        "last_error": row["last_error"],
        "dead_lettered_at": rfc3339(row["dead_lettered_at"]),
    }
    return json.dumps(document, separators=(",", ":")).encode()
